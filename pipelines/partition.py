"""Partition: balanced clustering of users into K shards from Spark ALS user embeddings.

Writes the versioned ``shard_map`` (user_key -> shard_id) and rewrites ``interactions``
partitioned by ``shard_id``. Exactness: the ALS embeddings and the centroids are fit on all
training data, including users who may later ask to be forgotten; after a deletion the
partition stays frozen (shard-level exactness: every shard that held the user is retrained
without them, but the other users' shard assignments were computed with them present).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recunlearn.config import RunConfig, fingerprint
from recunlearn.errors import PipelineError
from recunlearn.partition import Partition, balanced_kmeans, balanced_kmeans_ot, random_partition
from recunlearn.seeding import make_seed, numpy_rng
from recunlearn.tables import Layout, now_utc, vacuum_now, write_delta
from pipelines.ingest import INTERACTION_STATS

log = logging.getLogger(__name__)

PARTITION_GUARANTEE = (
    "shard-exact, partition frozen: every shard that held a forgotten user is retrained from "
    "scratch without them and the aggregator is refit on retained data; the user-to-shard "
    "assignment of the remaining users was computed from embeddings fit while the forgotten "
    "users were present"
)


def user_embeddings(spark: SparkSession, *, cfg: RunConfig, layout: Layout
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted user keys, their implicit-ALS factors and training rows, from the train split."""
    inter = spark.read.format("delta").load(layout.interactions)
    train = inter.where(F.col("split") == "train").select("user_key", "item_idx")
    counts = train.groupBy("user_key").count().toPandas().sort_values("user_key")
    keys = counts["user_key"].to_numpy().astype(str)
    rows = counts["count"].to_numpy()
    if len(keys) == 0:
        raise PipelineError("partition: the interactions table has no training rows")
    index = spark.createDataFrame(pd.DataFrame({"user_key": keys, "user_idx": np.arange(len(keys), dtype=np.int32)}))
    s = cfg.sharding
    als = ALS(rank=s.embedding_rank, maxIter=s.als_iterations, regParam=s.als_reg,
              implicitPrefs=True, userCol="user_idx", itemCol="item_idx", ratingCol="w",
              seed=make_seed(cfg.seed, "als") % (2**31), coldStartStrategy="drop")
    model = als.fit(train.join(index, "user_key").withColumn("w", F.lit(1.0)))
    factors = model.userFactors.toPandas().sort_values("id")
    x = np.zeros((len(keys), s.embedding_rank))
    x[factors["id"].to_numpy()] = np.stack(factors["features"].to_numpy())
    return keys, x, rows


def assign(x: np.ndarray, rows: np.ndarray, *, cfg: RunConfig) -> Partition:
    rng = numpy_rng(cfg.seed, "partition")
    s = cfg.sharding
    if s.method == "random":
        return random_partition(len(x), s.n_shards, rng)
    if s.method == "kmeans":
        return balanced_kmeans(x, s.n_shards, rng, iterations=s.kmeans_iterations, capacity=s.capacity)
    return balanced_kmeans_ot(x, s.n_shards, rng, iterations=s.kmeans_iterations,
                              epsilon=s.sinkhorn_epsilon, rows=rows, row_tolerance=s.row_tolerance)


def partition_users(spark: SparkSession, *, cfg: RunConfig, layout: Layout) -> dict[str, Any]:
    t0 = time.perf_counter()
    keys, x, rows = user_embeddings(spark, cfg=cfg, layout=layout)
    t_emb = time.perf_counter() - t0
    part = assign(x, rows, cfg=cfg)
    row_load = np.bincount(part.labels, weights=rows, minlength=cfg.sharding.n_shards)
    imbalance = part.max_imbalance()
    if cfg.sharding.method != "kmeans" and imbalance > cfg.sharding.balance_tolerance:
        raise PipelineError(f"partition: shard sizes {part.sizes.tolist()} deviate {imbalance:.1%} "
                            f"from n/K (tolerance {cfg.sharding.balance_tolerance:.0%})")
    partition_id = fingerprint({"sharding": cfg.sharding.model_dump(), "seed": cfg.seed,
                                "users": len(keys)})
    smap = spark.createDataFrame(
        pd.DataFrame({"user_key": keys, "shard_id": part.labels.astype(np.int32)})
    ).withColumn("partition_id", F.lit(partition_id)).withColumn("assigned_at", F.lit(now_utc()))
    smap_version = write_delta(smap, layout.shard_map, stats_columns=["shard_id"])
    inter = spark.read.format("delta").load(layout.interactions).drop("shard_id")
    shard = spark.read.format("delta").load(layout.shard_map).select("user_key", "shard_id")
    rewritten = inter.join(shard, "user_key", "left").fillna({"shard_id": -1})
    version = write_delta(rewritten, layout.interactions, partition_by=["shard_id"],
                          stats_columns=INTERACTION_STATS)
    vacuum_now(spark, layout.interactions)  # the unpartitioned files are no longer needed
    stats = {"users": int(len(keys)), "n_shards": cfg.sharding.n_shards,
             "method": cfg.sharding.method, "sizes": part.sizes.tolist(),
             "max_imbalance": round(imbalance, 4), "partition_id": partition_id,
             "train_rows": row_load.astype(int).tolist(),
             "row_imbalance": round(float(row_load.max() / row_load.mean() - 1), 4),
             "shard_map_version": smap_version, "interactions_version": version,
             "embedding_seconds": round(t_emb, 2), "seconds": round(time.perf_counter() - t0, 2),
             "guarantee": PARTITION_GUARANTEE}
    log.info("partitioned %d users into %d shards, sizes %s", len(keys), cfg.sharding.n_shards,
             part.sizes.tolist())
    return stats
