"""The exact family's choices through the real pipeline (Spark + Delta, Ray, torch):
RecEraser's balanced k-means partition (UBP) under its capacity cap, UltraRE-style learned
weights as the aggregator, refit on retained data when a user is forgotten, and the strict
partition mode, which recomputes the partition without the forgotten users."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import write_ml100k

from pipelines.audit import audit
from pipelines.forget import submit_user_requests
from pipelines.ingest import ingest
from pipelines.partition import STRICT_GUARANTEE, compute_partition, match_labels, partition_users
from pipelines.train import train_all
from pipelines.unlearn import unlearn
from recunlearn.data.pseudonym import user_key
from recunlearn.serving import load_ensemble
from recunlearn.sharding.ensemble import LearnedWeights
from recunlearn.storage import checkpoints
from recunlearn.storage.ledger import ForgetLedger
from recunlearn.storage.registry import ModelRegistry

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e]
SECRET = b"test-secret-key-0123456789"


def test_match_labels_keeps_shard_names_where_users_stay():
    old = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    new = np.array([2, 2, 1, 0, 0, 0, 1, 1, 1])  # the same clusters, renumbered; user 2 moved
    assert match_labels(old, new, 3).tolist() == [0, 0, 2, 1, 1, 1, 2, 2, 2]


def test_kmeans_learned_weights_and_strict_partition(spark, ray_local, cfg, layout, tmp_path):
    """RecEraser's k-means shards under the cap, learned weights refit after the deletion, and
    the strict mode: the partition recomputed without the forgotten users, every shard whose
    members changed retrained, the rest kept."""
    cfg = cfg.model_copy(
        update={
            "sharding": cfg.sharding.model_copy(update={"method": "kmeans", "capacity": 1.2}),
            "aggregator": cfg.aggregator.model_copy(update={"kind": "learned"}),
            "unlearn": cfg.unlearn.model_copy(update={"partition": "strict"}),
        }
    )
    raw = tmp_path / "raw"
    write_ml100k(raw)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET)
    part = partition_users(spark, cfg=cfg, layout=layout)
    assert part["method"] == "kmeans" and sum(part["sizes"]) == part["users"] == 60
    assert max(part["sizes"]) <= math.ceil(1.2 * part["users"] / cfg.sharding.n_shards)
    trained = train_all(spark, cfg=cfg, layout=layout, partition=part)
    # epochs per component: each shard and the reference ran at least to its best epoch
    epochs = trained["epochs"]
    assert set(epochs) == {str(k) for k in range(cfg.sharding.n_shards)} | {"reference"}
    assert all(0 <= e["best"] <= e["run"] <= cfg.model.max_epochs for e in epochs.values())
    registry = ModelRegistry(layout)
    v1 = registry.current_version()
    agg1 = checkpoints.load_state(v1.aggregator.path)
    assert agg1["kind"] == "learned" and agg1["meta"]["stats"]["n_train"] > 0

    submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=["5", "40"])
    res = unlearn(spark, cfg=cfg, layout=layout)
    strict = res["partition"]
    assert res["partition_mode"] == "strict" and strict["users"] == 58
    assert res["shards_retrained"] == sorted(
        set(res["shards_touched"]) | set(strict["shards_changed"])
    )
    # the shard map is what a fresh partition of the retained data gives (up to shard names)
    keys, _, fresh, _ = compute_partition(spark, cfg=cfg, layout=layout)
    smap = spark.read.format("delta").load(layout.shard_map).toPandas().set_index("user_key")
    now = smap["shard_id"].reindex(keys).to_numpy()
    assert (match_labels(now, fresh.labels, cfg.sharding.n_shards) == now).all()
    v2 = registry.current_version()
    assert v2.guarantee == STRICT_GUARANTEE and v2.partition["mode"] == "strict"
    for k in range(cfg.sharding.n_shards):
        same = v2.shards[k].path == v1.shards[k].path
        assert same == (k not in res["shards_retrained"])
    # every shard's data at the published version is exactly its members' retained rows
    inter = (
        spark.read.format("delta")
        .load(layout.interactions)
        .select("user_key", "shard_id")
        .distinct()
        .toPandas()
    )
    assert (inter.set_index("user_key")["shard_id"].reindex(keys).to_numpy() == now).all()
    # the weights were refit on the retained data of the new table version
    assert v2.aggregator.path != v1.aggregator.path
    assert v2.aggregator.delta_version == v2.table_version
    ens = load_ensemble(v2)
    assert (
        isinstance(ens.aggregator, LearnedWeights) and np.isfinite(ens.aggregator.w.numpy()).all()
    )
    assert [r["status"] for r in ForgetLedger(spark, layout.ledger).rows()] == ["verified"] * 2
    report = audit(spark, layout=layout, secret=SECRET, raw_ids=["5", "40"])
    assert report["passed"] and report["guarantee"] == STRICT_GUARANTEE


# slow (80 s each): the partitioners are unit-tested in test_partition.py
@pytest.mark.slow
@pytest.mark.parametrize("unit", ["item", "interaction"])
def test_item_and_interaction_shards_retrain_every_shard_holding_the_user(
    spark, ray_local, cfg, layout, tmp_path, unit
):
    cfg = cfg.model_copy(
        update={
            # 4 shards over 3 planted groups: with the 1.2 n/K cap each group spills over into two
            "sharding": cfg.sharding.model_copy(
                update={"unit": unit, "method": "kmeans", "n_shards": 4}
            ),
            "unlearn": cfg.unlearn.model_copy(
                update={"membership": False, "retrain_reference": False}
            ),
        }
    )
    raw = tmp_path / "raw"
    write_ml100k(raw)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET)
    part = partition_users(spark, cfg=cfg, layout=layout)
    assert part["unit"] == unit and part["shards_per_user"]["mean"] > 1
    train_all(spark, cfg=cfg, layout=layout, partition=part)
    registry = ModelRegistry(layout)
    v1 = registry.current_version()
    inter = spark.read.format("delta").load(layout.interactions).toPandas()
    spread = inter.groupby("user_key")["shard_id"].nunique()
    rid = next(r for r in map(str, range(1, 61)) if spread.get(user_key(SECRET, r), 0) > 1)
    key = user_key(SECRET, rid)
    holding = sorted(int(s) for s in inter.loc[inter["user_key"] == key, "shard_id"].unique())
    assert len(holding) > 1 and -1 not in holding
    # the shard map lists every shard holding any of the user's rows
    smap = spark.read.format("delta").load(layout.shard_map).toPandas()
    assert sorted(smap.loc[smap["user_key"] == key, "shard_id"]) == holding

    submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=[rid])
    res = unlearn(spark, cfg=cfg, layout=layout)
    assert res["shards_touched"] == holding and res["shards_retrained"] == holding
    v2 = registry.current_version()
    for k in range(cfg.sharding.n_shards):
        assert (v2.shards[k].path != v1.shards[k].path) == (k in holding)
    ens = load_ensemble(v2)
    assert not ens.knows(np.array([key])).any()
    # (raw ids here are short numbers that occur in any Delta log: the raw-id scan is tested
    # with distinctive ids elsewhere; the key scan runs)
    report = audit(spark, layout=layout, secret=SECRET)
    assert report["passed"], json.dumps(report["requests"], default=str)


def test_sequential_training_restarts_from_the_earliest_group(
    spark, ray_local, cfg, layout, tmp_path
):
    """LASER through the pipeline: one model trained group after group, a checkpoint per group;
    forgetting a user retrains the stages from the user's group on, keeps the earlier ones,
    and publishes what training from scratch on the retained data gives."""
    import torch

    from pipelines.train import read_grouped_data
    from recunlearn.models import load_model
    from recunlearn.seeding import make_seed
    from recunlearn.sharding.sequential import fit_sequential

    cfg = cfg.model_copy(
        update={
            "sharding": cfg.sharding.model_copy(update={"method": "kmeans", "group_epochs": 5}),
            "train": cfg.train.model_copy(update={"mode": "sequential", "reference_model": False}),
            "unlearn": cfg.unlearn.model_copy(update={"membership": False}),
        }
    )
    raw = tmp_path / "raw"
    write_ml100k(raw)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET)
    part = partition_users(spark, cfg=cfg, layout=layout)
    train_all(spark, cfg=cfg, layout=layout, partition=part)
    registry = ModelRegistry(layout)
    v1 = registry.current_version()
    order = v1.order
    assert sorted(order) == list(range(cfg.sharding.n_shards))
    assert [v1.shards[k].n_users for k in order] == sorted(
        v1.shards[k].n_users for k in order
    )  # each stage adds a group's users
    # a user of the group in the middle of the curriculum: the first stage stays
    smap = (
        spark.read.format("delta")
        .load(layout.shard_map)
        .toPandas()
        .set_index("user_key")["shard_id"]
    )
    rid = next(r for r in map(str, range(1, 61)) if smap.get(user_key(SECRET, r)) == order[1])
    submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=[rid])
    res = unlearn(spark, cfg=cfg, layout=layout)
    assert res["shards_touched"] == [order[1]] and res["shards_retrained"] == order[1:]
    v2 = registry.current_version()
    assert v2.order == order
    for pos, k in enumerate(order):
        assert (v2.shards[k].path == v1.shards[k].path) == (pos == 0)
    # the published model is the from-scratch sequential run on the retained data
    data, labels = read_grouped_data(layout.interactions, v2.table_version, v2.n_items)
    stages, _ = fit_sequential(
        data,
        labels,
        np.asarray(order),
        cfg.model,
        seed=make_seed(cfg.seed, "model", "sequential"),
        group_epochs=cfg.sharding.group_epochs,
    )
    served = load_model(checkpoints.load_state(v2.shards[order[-1]].path))
    assert torch.equal(served.user, stages[-1].user) and torch.equal(served.item, stages[-1].item)
    ens = load_ensemble(v2)
    assert len(ens.shards) == 1 and not ens.knows(np.array([user_key(SECRET, rid)])).any()
    report = audit(spark, layout=layout, secret=SECRET)
    assert report["passed"], json.dumps(report["requests"], default=str)
