"""Partition: balanced clustering of users into K shards from Spark ALS user embeddings.

Writes the versioned ``shard_map`` (user_key -> shard_id) and rewrites ``interactions``
partitioned by ``shard_id``. Exactness: the ALS embeddings and the centroids are fit on all
training data, including users who may later ask to be forgotten. By default, after a
deletion the partition stays frozen (shard-level exactness: every shard that held the user is
retrained without them, but the other users' shard assignments were computed with them
present). In strict mode (``unlearn.partition: strict``) the unlearn job recomputes the
partition from the retained data (``repartition_strict``) and also retrains every shard whose
members changed.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.ingest import INTERACTION_STATS
from recunlearn.config import RunConfig
from recunlearn.errors import PipelineError
from recunlearn.hashing import fingerprint
from recunlearn.seeding import make_seed, numpy_rng
from recunlearn.sharding.partition import Partition, interaction_embeddings, partition_with
from recunlearn.storage.delta import table_rows, vacuum_now, write_delta
from recunlearn.storage.joblock import holds_tables
from recunlearn.storage.layout import Layout, now_utc

log = logging.getLogger(__name__)

PARTITION_GUARANTEE = (
    "shard-exact, partition frozen: every shard that held a forgotten user is retrained from "
    "scratch without them and the aggregator is refit on retained data; the user-to-shard "
    "assignment of the remaining users was computed from embeddings fit while the forgotten "
    "users were present"
)


def user_embeddings(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted user keys, their embeddings (``sharding.embedding``) and training rows, from
    the train split."""
    if cfg.sharding.embedding == "sketch":
        return _sketch(spark, cfg=cfg, layout=layout)
    keys, x, rows, _ = _als(spark, cfg=cfg, layout=layout)
    return keys, x, rows


def _sketch(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A randomised range finder of the user-item matrix X (training rows, item i weighted
    1/sqrt(n_i), so rare shared items count more than popular ones): each user's items
    projected on ``embedding_rank`` seeded random sign vectors, S = X W R, then
    ``sketch_iterations`` power steps S <- X W (W X^T S), which leave the noise of the random
    projection behind and keep the directions the users' co-consumption spans. Normalised
    rows. In Spark: one aggregation, then two joins and aggregations a power step; the
    driver receives one vector per user."""
    inter = spark.read.format("delta").load(layout.interactions)
    train = inter.where(F.col("split") == "train").select("user_key", "item_idx")
    popularity = train.groupBy("item_idx").agg(F.count(F.lit(1)).alias("_n"))
    rows = (
        train.join(popularity, "item_idx")
        .select("user_key", "item_idx", (1.0 / F.sqrt("_n")).alias("_w"))
        .localCheckpoint()
    )
    seed = make_seed(cfg.seed, "sketch") % (2**31)
    rank = cfg.sharding.embedding_rank
    e = [f"_e{j}" for j in range(rank)]

    def sign(j: int) -> Any:
        return F.when(F.pmod(F.xxhash64(F.lit(seed), "item_idx", F.lit(j)), F.lit(2)) == 0, 1.0)

    users = rows.groupBy("user_key").agg(
        *[F.sum(sign(j).otherwise(-1.0) * F.col("_w")).alias(e[j]) for j in range(rank)]
    )
    for _ in range(cfg.sharding.sketch_iterations):
        items = (
            rows.join(users, "user_key")
            .groupBy("item_idx")
            .agg(*[F.sum(F.col(c) * F.col("_w")).alias(c) for c in e])
        )
        users = (
            rows.join(items, "item_idx")
            .groupBy("user_key")
            .agg(*[F.sum(F.col(c) * F.col("_w")).alias(c) for c in e])
            .localCheckpoint()
        )
    counts = rows.groupBy("user_key").agg(F.count(F.lit(1)).alias("_rows"))
    out = frame(users.join(counts, "user_key")).sort_values("user_key")
    if out.empty:
        raise PipelineError("partition: the interactions table has no training rows")
    x = out[e].to_numpy(dtype=np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    return out["user_key"].to_numpy().astype(str), x, out["_rows"].to_numpy().astype(np.int64)


def _als(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    inter = spark.read.format("delta").load(layout.interactions)
    train = inter.where(F.col("split") == "train").select("user_key", "item_idx")
    counts = frame(train.groupBy("user_key").count()).sort_values("user_key")
    keys = counts["user_key"].to_numpy().astype(str)
    rows = counts["count"].to_numpy()
    if len(keys) == 0:
        raise PipelineError("partition: the interactions table has no training rows")
    index = spark.createDataFrame(
        pd.DataFrame({"user_key": keys, "user_idx": np.arange(len(keys), dtype=np.int32)})
    )
    s = cfg.sharding
    als = ALS(
        rank=s.embedding_rank,
        maxIter=s.als_iterations,
        regParam=s.als_reg,
        implicitPrefs=True,
        userCol="user_idx",
        itemCol="item_idx",
        ratingCol="w",
        seed=make_seed(cfg.seed, "als") % (2**31),
        coldStartStrategy="drop",
    )
    model = als.fit(train.join(index, "user_key").withColumn("w", F.lit(1.0)))
    factors = frame(model.userFactors).sort_values("id")
    x = np.zeros((len(keys), s.embedding_rank))
    x[factors["id"].to_numpy()] = np.stack(factors["features"].to_numpy())
    return keys, x, rows, model


def frame(df: Any) -> pd.DataFrame:
    """A Spark DataFrame collected to the driver as pandas. (The item and interaction partitions
    still collect every interaction here: the scale issue moves that step into Spark.)"""
    out: pd.DataFrame = df.toPandas()
    return out


def assign(x: np.ndarray, rows: np.ndarray | None, *, cfg: RunConfig) -> Partition:
    s = cfg.sharding
    return partition_with(s.method, x, s.n_shards, numpy_rng(cfg.seed, "partition"), s, rows)


STRICT_GUARANTEE = (
    "shard-exact, partition strict: the partition was recomputed from the retained data alone "
    "(embeddings and clustering, as a fresh run would compute it), every shard whose members "
    "changed or that held forgotten data was retrained from scratch, and the aggregator was "
    "refit on retained data"
)


def compute_partition(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout
) -> tuple[np.ndarray, np.ndarray, Partition, float]:
    """Keys, training rows per user, the partition and the embedding time, from the current
    interactions table: a deterministic function of the data and the seed."""
    t0 = time.perf_counter()
    keys, x, rows = user_embeddings(spark, cfg=cfg, layout=layout)
    t_emb = time.perf_counter() - t0
    return keys, rows, assign(x, rows, cfg=cfg), t_emb


def write_partition(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout, keys: np.ndarray, labels: np.ndarray
) -> tuple[str, int, int]:
    """Write the shard map and rewrite the interactions partitioned by shard (then VACUUM the
    old files). Returns the partition id and both table versions."""
    partition_id = fingerprint(
        {
            "sharding": cfg.sharding.model_dump(),
            "seed": cfg.seed,
            "users": len(keys),
            "labels": fingerprint({"labels": labels.tolist()}),
        }
    )
    smap = (
        spark.createDataFrame(pd.DataFrame({"user_key": keys, "shard_id": labels.astype(np.int32)}))
        .withColumn("partition_id", F.lit(partition_id))
        .withColumn("assigned_at", F.lit(now_utc()))
    )
    smap_version = write_delta(smap, layout.shard_map, stats_columns=["shard_id"])
    inter = spark.read.format("delta").load(layout.interactions).drop("shard_id")
    shard = spark.read.format("delta").load(layout.shard_map).select("user_key", "shard_id")
    rewritten = inter.join(shard, "user_key", "left").fillna({"shard_id": -1})
    version = write_delta(
        clustered(rewritten, cfg, table_rows(layout.interactions)),
        layout.interactions,
        partition_by=["shard_id"],
        stats_columns=INTERACTION_STATS,
    )
    vacuum_now(spark, layout.interactions)  # the files of the old layout are no longer needed
    vacuum_now(spark, layout.shard_map)
    return partition_id, smap_version, version


def clustered(df: DataFrame, cfg: RunConfig, rows: int | None = None) -> DataFrame:
    """``df`` range-partitioned by (shard, user key) into about ``rows / rows_per_file`` tasks
    (at least K) and sorted within each: every file written from it holds a contiguous range
    of one shard's users, so deleting one user rewrites one file (two at a range boundary)
    instead of every file of the shard. The ranges come from Spark's sample of the keys, no
    data on the driver. ``rows`` (it only sizes the files) is counted when not given; the
    partition steps take it from the interactions table's log instead of a pass over it."""
    if rows is None:
        rows = df.count()
    n = max(cfg.sharding.n_shards, math.ceil(rows / cfg.sharding.rows_per_file))
    return df.repartitionByRange(n, "shard_id", "user_key").sortWithinPartitions(
        "shard_id", "user_key"
    )


def _check_balance(part: Partition, cfg: RunConfig) -> float:
    """The partition's imbalance; over the tolerance is an error (kmeans is bounded by its
    capacity instead)."""
    imbalance = part.max_imbalance()
    if cfg.sharding.method != "kmeans" and imbalance > cfg.sharding.balance_tolerance:
        raise PipelineError(
            f"partition: shard sizes {part.sizes.tolist()} deviate {imbalance:.1%} "
            f"from n/K (tolerance {cfg.sharding.balance_tolerance:.0%})"
        )
    return imbalance


def match_labels(old: np.ndarray, new: np.ndarray, k: int) -> np.ndarray:
    """Relabel ``new`` (same users as ``old``) so that as many users as possible keep their
    shard: shard ids are names, and a recomputed clustering may number its clusters
    differently. Hungarian assignment on the K x K overlap."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((k, k), dtype=np.int64)
    np.add.at(overlap, (new, old), 1)
    rows, cols = linear_sum_assignment(-overlap)
    to = np.empty(k, dtype=np.int64)
    to[rows] = cols
    return to[new].astype(np.int32)


def repartition_strict(spark: SparkSession, *, cfg: RunConfig, layout: Layout) -> dict[str, Any]:
    """Strict partition mode, after a delete: recompute the partition from the retained data
    (what a fresh run would compute), keep shard names where users stay, write it, and report
    which shards' members changed (they must be retrained) and how many users moved."""
    t0 = time.perf_counter()
    old_map = frame(
        spark.read.format("delta").load(layout.shard_map).select("user_key", "shard_id")
    )
    keys, rows, part, t_emb = compute_partition(spark, cfg=cfg, layout=layout)
    old = old_map.set_index("user_key")["shard_id"].reindex(keys).to_numpy()
    if np.isnan(old.astype(float)).any():
        raise PipelineError("strict partition: retained users missing from the shard map")
    old = old.astype(np.int64)
    k = cfg.sharding.n_shards
    labels = match_labels(old, part.labels, k)
    moved = labels != old
    changed = sorted({int(s) for s in np.concatenate([old[moved], labels[moved]])})
    partition_id, smap_version, version = write_partition(
        spark, cfg=cfg, layout=layout, keys=keys, labels=labels
    )
    return {
        "users": int(len(keys)),
        "users_moved": int(moved.sum()),
        "shards_changed": changed,
        "sizes": np.bincount(labels, minlength=k).tolist(),
        "partition_id": partition_id,
        "shard_map_version": smap_version,
        "interactions_version": version,
        "embedding_seconds": round(t_emb, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }


@holds_tables("partition")
def partition_users(spark: SparkSession, *, cfg: RunConfig, layout: Layout) -> dict[str, Any]:
    """The partition job: users (UBP), items (IBP) or interactions (InBP) into K shards, by
    ``sharding.unit``."""
    if cfg.sharding.unit != "user":
        return partition_rows(spark, cfg=cfg, layout=layout)
    t0 = time.perf_counter()
    keys, rows, part, t_emb = compute_partition(spark, cfg=cfg, layout=layout)
    row_load = np.bincount(part.labels, weights=rows, minlength=cfg.sharding.n_shards)
    imbalance = _check_balance(part, cfg)
    partition_id, smap_version, version = write_partition(
        spark, cfg=cfg, layout=layout, keys=keys, labels=part.labels
    )
    stats = {
        "users": int(len(keys)),
        "n_shards": cfg.sharding.n_shards,
        "method": cfg.sharding.method,
        "sizes": part.sizes.tolist(),
        "max_imbalance": round(imbalance, 4),
        "partition_id": partition_id,
        "train_rows": row_load.astype(int).tolist(),
        "row_imbalance": round(float(row_load.max() / row_load.mean() - 1), 4),
        "shard_map_version": smap_version,
        "interactions_version": version,
        "embedding_seconds": round(t_emb, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "guarantee": PARTITION_GUARANTEE,
    }
    log.info(
        "partitioned %d users into %d shards, sizes %s",
        len(keys),
        cfg.sharding.n_shards,
        part.sizes.tolist(),
    )
    return stats


@holds_tables("partition")
def partition_rows(spark: SparkSession, *, cfg: RunConfig, layout: Layout) -> dict[str, Any]:
    """Item-based (IBP) or interaction-based (InBP) partition: the clustering runs on the ALS
    item factors, or on each training interaction's user and item factors side by side
    (``interaction_embeddings``). One user's data then lies in several shards: the shard map
    holds one row per (user, shard) that has any of the user's rows, so a forget request
    touches, deletes from and retrains all of them. Validation and test rows go with their
    item (IBP) or to the shard holding most of the user's training rows (InBP)."""
    t0 = time.perf_counter()
    unit, k = cfg.sharding.unit, cfg.sharding.n_shards
    keys, ux, _, model = _als(spark, cfg=cfg, layout=layout)
    ifac = frame(model.itemFactors)
    n_items = int(max(ifac["id"].max(), 0)) + 1
    vx = np.zeros((n_items, cfg.sharding.embedding_rank))
    vx[ifac["id"].to_numpy()] = np.stack(ifac["features"].to_numpy())
    t_emb = time.perf_counter() - t0
    inter = spark.read.format("delta").load(layout.interactions).drop("shard_id")
    pairs = frame(inter.select("user_key", "item_idx", "split"))
    train = pairs["split"].to_numpy() == "train"
    urow = np.searchsorted(keys, pairs["user_key"].to_numpy().astype(str))
    item = pairs["item_idx"].to_numpy().astype(np.int64)
    shard = np.full(len(pairs), -1, dtype=np.int32)
    if unit == "item":
        trained_items = np.unique(item[train])
        part = assign(
            vx[trained_items], np.bincount(item[train], minlength=n_items)[trained_items], cfg=cfg
        )
        of_item = np.full(max(n_items, int(item.max()) + 1), -1, dtype=np.int32)
        of_item[trained_items] = part.labels
        shard = of_item[item]
    else:
        x = interaction_embeddings(ux, vx, urow[train], item[train])
        part = assign(x, None, cfg=cfg)
        shard[train] = part.labels
        # a user's other rows go to the shard with most of their training rows
        votes = np.zeros((len(keys), k), dtype=np.int64)
        np.add.at(votes, (urow[train], part.labels), 1)
        shard[~train] = votes.argmax(1)[urow[~train]]
    imbalance = _check_balance(part, cfg)
    assigned = spark.createDataFrame(
        pd.DataFrame(
            {
                "user_key": pairs["user_key"].to_numpy().astype(str),
                "item_idx": item.astype(np.int32),
                "split": pairs["split"].to_numpy().astype(str),
                "shard_id": shard,
            }
        ).drop_duplicates(["user_key", "item_idx", "split"])
    )  # a repeated pair: one shard, no extra rows
    rewritten = inter.join(assigned, ["user_key", "item_idx", "split"], "left").fillna(
        {"shard_id": -1}
    )
    version = write_delta(
        clustered(rewritten, cfg, table_rows(layout.interactions)),
        layout.interactions,
        partition_by=["shard_id"],
        stats_columns=INTERACTION_STATS,
    )
    vacuum_now(spark, layout.interactions)
    member = pd.DataFrame({"user_key": pairs["user_key"].to_numpy().astype(str), "shard_id": shard})
    member = member[member["shard_id"] >= 0].drop_duplicates()
    partition_id = fingerprint(
        {
            "sharding": cfg.sharding.model_dump(),
            "seed": cfg.seed,
            "labels": fingerprint({"labels": shard.tolist()}),
        }
    )
    smap = (
        spark.createDataFrame(member)
        .withColumn("partition_id", F.lit(partition_id))
        .withColumn("assigned_at", F.lit(now_utc()))
    )
    smap_version = write_delta(smap, layout.shard_map, stats_columns=["shard_id"])
    vacuum_now(spark, layout.shard_map)
    per_user = member.groupby("user_key").size()
    row_load = np.bincount(shard[train & (shard >= 0)], minlength=k)
    stats = {
        "users": int(len(keys)),
        "n_shards": k,
        "unit": unit,
        "method": cfg.sharding.method,
        "sizes": part.sizes.tolist(),
        "max_imbalance": round(imbalance, 4),
        "partition_id": partition_id,
        "train_rows": row_load.astype(int).tolist(),
        "row_imbalance": round(float(row_load.max() / max(row_load.mean(), 1) - 1), 4),
        "shards_per_user": {"mean": round(float(per_user.mean()), 3), "max": int(per_user.max())},
        "shard_map_version": smap_version,
        "interactions_version": version,
        "embedding_seconds": round(t_emb, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "guarantee": PARTITION_GUARANTEE,
    }
    log.info(
        "partitioned %d %ss into %d shards, sizes %s; %.2f shards per user",
        len(shard),
        unit,
        k,
        part.sizes.tolist(),
        per_user.mean(),
    )
    return stats
