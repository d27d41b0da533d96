"""Balanced partitioning: balance is exact, planted clusters are recovered, nearest-with-room."""

import numpy as np
import pytest

from recunlearn.errors import ConfigError
from recunlearn.sharding.partition import (
    balanced_kmeans,
    balanced_kmeans_ot,
    capacities,
    capacity_round,
    interaction_embeddings,
    random_partition,
    sinkhorn,
)


def planted(n_per: int = 50, k: int = 4, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10, size=(k, d))
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centers])
    return x, np.repeat(np.arange(k), n_per)


def purity(labels, truth):
    return sum(np.bincount(truth[labels == c]).max() for c in np.unique(labels)) / len(labels)


def test_ot_kmeans_recovers_planted_clusters_with_exact_balance():
    x, truth = planted()
    p = balanced_kmeans_ot(x, 4, np.random.default_rng(1))
    assert p.sizes.tolist() == [50, 50, 50, 50]
    assert purity(p.labels, truth) > 0.95


def test_unequal_clusters_are_still_balanced_within_one_user():
    x, _ = planted(n_per=30, k=3)
    x = np.concatenate([x, x[:17] + 0.01])  # cluster 0 is now larger
    p = balanced_kmeans_ot(x, 5, np.random.default_rng(0))
    assert p.sizes.max() - p.sizes.min() <= 1
    assert p.max_imbalance() <= 0.1


def test_capacity_round_prefers_the_nearest_cluster_with_room():
    cost = np.array([[0.0, 5.0], [1.0, 4.0], [2.0, 0.5]])
    # capacities (2, 1): users 0 and 1 prefer cluster 0; user 2 prefers 1
    assert capacity_round(cost, np.array([2, 1])).tolist() == [0, 0, 1]
    # capacity of cluster 0 is 1: the nearer claimant (user 0) keeps it, user 1 moves
    assert capacity_round(cost, np.array([1, 2])).tolist() == [0, 1, 1]


def test_sinkhorn_plan_has_uniform_marginals():
    rng = np.random.default_rng(0)
    cost = rng.random((40, 4))
    plan, _, _ = sinkhorn(cost, eps=0.05)
    assert np.allclose(plan.sum(0), 1 / 4, atol=1e-4)
    assert np.allclose(plan.sum(1), 1 / 40, atol=1e-4)


def test_random_partition_is_seeded_and_balanced():
    a = random_partition(103, 10, np.random.default_rng(5))
    b = random_partition(103, 10, np.random.default_rng(5))
    assert (a.labels == b.labels).all()
    assert sorted(a.sizes.tolist()) == sorted(capacities(103, 10).tolist())


def test_too_few_users_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot split 3 users into 5 shards"):
        balanced_kmeans_ot(np.zeros((3, 2)), 5, np.random.default_rng(0))


def test_row_rebalancing_keeps_user_counts_and_bounds_rows():
    x, truth = planted(n_per=40, k=4)
    rows = np.where(truth == 0, 50, 5)  # cluster 0 holds the heavy users
    plain = balanced_kmeans_ot(x, 4, np.random.default_rng(1))
    load = np.bincount(plain.labels, weights=rows)
    assert load.max() / load.mean() > 2  # the problem: balanced users, unbalanced rows
    p = balanced_kmeans_ot(x, 4, np.random.default_rng(1), rows=rows, row_tolerance=0.25)
    assert p.sizes.tolist() == plain.sizes.tolist()
    load = np.bincount(p.labels, weights=rows)
    assert load.max() <= 1.25 * load.mean()


def test_row_rebalancing_moves_the_cheapest_pair():
    from recunlearn.sharding.partition import rebalance_rows

    labels = np.array([0, 0, 1, 1])
    rows = np.array([10.0, 10.0, 1.0, 1.0])
    # users 0 and 1 weigh the same; user 1 is nearly as close to cluster 1 as to cluster 0
    cost = np.array([[0.0, 9.0], [0.0, 0.5], [9.0, 0.0], [9.0, 0.0]])
    out = rebalance_rows(labels, cost, rows, tolerance=0.0)
    assert out.tolist() == [0, 1, 0, 1] or out.tolist() == [0, 1, 1, 0]
    assert np.bincount(out).tolist() == [2, 2]


def test_receraser_kmeans_recovers_planted_clusters_under_the_cap():
    x, truth = planted()
    p = balanced_kmeans(x, 4, np.random.default_rng(1))
    assert purity(p.labels, truth) > 0.95 and p.sizes.sum() == 200
    # a planted cluster larger than the cap spills its farthest rows, never more than the cap
    x, truth = planted(n_per=40, k=3)
    x = np.concatenate([x, x[truth == 0][:30] + 0.01])  # cluster 0: 70 of 150 rows
    p = balanced_kmeans(x, 3, np.random.default_rng(0), capacity=1.2)
    assert p.sizes.max() <= 60 and p.sizes.sum() == 150
    # the rows that stay in cluster 0's shard are its nearest to the centroid
    big = np.bincount(p.labels[:40]).argmax()
    d = ((x - p.centroids[big]) ** 2).sum(1)
    own = np.flatnonzero(np.concatenate([truth, np.zeros(30, int)]) == 0)
    kept, spilled = own[p.labels[own] == big], own[p.labels[own] != big]
    assert len(spilled) > 0 and d[kept].max() <= d[spilled].min() + 1e-9
    with pytest.raises(ConfigError):
        balanced_kmeans(x, 3, np.random.default_rng(0), capacity=0.9)


def test_centroids_are_vectors_not_scalars():
    # RecEraser's code took the mean without an axis: every centroid became one number
    x, _ = planted(k=2, d=5)
    p = balanced_kmeans(x, 2, np.random.default_rng(0))
    assert p.centroids.shape == (2, 5)
    assert np.allclose(p.centroids[0], x[p.labels == 0].mean(0))


def test_interaction_embeddings_put_users_data_in_several_shards():
    # two user groups x two item groups: interaction clusters are (user group, item group)
    rng = np.random.default_rng(2)
    ue = np.concatenate([rng.normal(0, 0.1, (20, 3)) + 5, rng.normal(0, 0.1, (20, 3)) - 5])
    ie = np.concatenate([rng.normal(0, 0.1, (10, 3)) + 5, rng.normal(0, 0.1, (10, 3)) - 5])
    users, items = np.repeat(np.arange(40), 20), np.tile(np.arange(20), 40)
    x = interaction_embeddings(ue, ie, users, items)
    assert x.shape == (800, 6)
    p = balanced_kmeans(x, 4, np.random.default_rng(0))
    assert purity(p.labels, (users // 20) * 2 + items // 10) == 1.0
    shards_per_user = np.array([len(np.unique(p.labels[users == u])) for u in range(40)])
    assert (shards_per_user == 2).all()  # each user's data lies in two shards


@pytest.mark.spark
def test_the_partitioned_table_holds_each_users_rows_in_one_file_or_two(spark, cfg, tmp_path):
    """Clustered by (shard, user key) into files of ``rows_per_file`` rows: a user's rows lie
    in one file (two where a range boundary splits them), so a one-user delete rewrites a
    file, not the shard (which here spans several files)."""
    import pandas as pd
    from pyspark.sql import functions as F

    from pipelines.partition import clustered
    from recunlearn.storage.delta import write_delta

    rng = np.random.default_rng(0)
    users = [f"u{i:03d}" for i in range(300)]
    shard = {u: int(rng.integers(0, 3)) for u in users}
    rows = [(u, int(i), shard[u]) for u in users for i in rng.choice(500, 12)]
    df = spark.createDataFrame(pd.DataFrame(rows, columns=["user_key", "item_idx", "shard_id"]))
    small = cfg.model_copy(
        update={"sharding": cfg.sharding.model_copy(update={"n_shards": 3, "rows_per_file": 300})}
    )
    path = str(tmp_path / "t")
    write_delta(clustered(df.repartition(4), small), path, partition_by=["shard_id"])
    got = (
        spark.read.format("delta")
        .load(path)
        .withColumn("file", F.input_file_name())
        .groupBy("user_key")
        .agg(F.countDistinct("file").alias("files"), F.countDistinct("shard_id").alias("shards"))
        .toPandas()
    )
    files = spark.read.format("delta").load(path).select(F.input_file_name()).distinct().count()
    assert files >= 12  # 3,600 rows / 300 a file, at least one a shard
    assert len(got) == 300 and got["files"].max() <= 2 and got["shards"].max() == 1
    assert (got["files"] == 1).mean() > 0.9


@pytest.mark.spark
def test_sketch_embeddings_recover_planted_taste_groups(spark, cfg, layout):
    """Three groups of users, each drawing from its own items plus a shared popular head: the
    sketch (with its one power step) puts each group in a shard of its own under the balanced
    clustering; the vectors are unit length, one per user with a training row."""
    import pandas as pd

    from pipelines.partition import assign, user_embeddings
    from recunlearn.storage.delta import write_delta

    rng = np.random.default_rng(1)
    rows = []
    for u in range(120):
        group = u % 3
        own = rng.choice(np.arange(group * 100, group * 100 + 100), 15, replace=False)
        head = rng.choice(np.arange(300, 305), 3, replace=False)  # everyone's popular items
        rows += [(f"u{u:03d}", int(i), "train") for i in np.r_[own, head]]
    rows.append(("only-test", 1, "test"))  # no training row: not embedded
    df = spark.createDataFrame(pd.DataFrame(rows, columns=["user_key", "item_idx", "split"]))
    write_delta(df, layout.interactions)
    sk = cfg.model_copy(
        update={
            "sharding": cfg.sharding.model_copy(
                update={"embedding": "sketch", "n_shards": 3, "embedding_rank": 16}
            )
        }
    )
    keys, x, counts = user_embeddings(spark, cfg=sk, layout=layout)
    assert len(keys) == 120 and "only-test" not in keys and (counts == 18).all()
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    labels = assign(x, counts, cfg=sk).labels
    group = np.array([int(k[1:]) % 3 for k in keys])
    for g in range(3):  # each planted group is one shard
        assert np.bincount(labels[group == g], minlength=3).max() == 40


def test_the_sketch_embeds_users_only():
    from recunlearn.config import ShardingConfig

    with pytest.raises(ValueError, match="embedding=sketch embeds users"):
        ShardingConfig(embedding="sketch", unit="item")
