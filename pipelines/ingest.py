"""Ingest: raw log -> Delta ``interactions`` (keyed by pseudonymous user_key) and ``items``.

Raw user ids are hashed inside Spark (HMAC-SHA256) before anything is written. Users whose
forget request was completed are dropped, so a re-ingest of an old log cannot bring them back.
Each user's rows are split train/valid/test by a seeded hash of the raw (user, item) pair,
so the split is reproducible, independent of file order and of the pseudonymisation secret.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recunlearn.config import RunConfig
from recunlearn.data.pseudonym import spark_user_key
from recunlearn.data.readers import engine_errors, read_interactions
from recunlearn.data.split import spark_ops, split_labels
from recunlearn.errors import DataError
from recunlearn.storage.delta import table_exists, write_delta
from recunlearn.storage.joblock import holds_tables
from recunlearn.storage.layout import Layout
from recunlearn.storage.ledger import USER
from recunlearn.storage.requests import FORGOTTEN_STATES

log = logging.getLogger(__name__)

INTERACTION_STATS = [
    "item_idx",
    "split",
    "rating",
    "ts",
]  # never user_key: see recunlearn.storage.delta


def split_per_user(df: DataFrame, *, valid: float, test: float) -> DataFrame:
    """Add ``split`` by the library's per-user hold-out rule
    (:func:`recunlearn.data.split.split_labels`): per user, rows ordered by their ``order``
    hash (ties by item). The two coins are the user's own seeded order hashes (20 low bits of
    its smallest and largest), so the split stays reproducible and independent of the
    pseudonymisation secret."""
    by_user = Window.partitionBy("user_key")
    w = by_user.orderBy(F.col("order"), F.col("item_idx"))
    unit = float(1 << 20)
    staged = (
        df.withColumn("_n", F.count(F.lit(1)).over(by_user))
        .withColumn("_pos", F.row_number().over(w) - 1)
        .withColumn("_ct", F.pmod(F.min("order").over(by_user), F.lit(1 << 20)) / unit)
        .withColumn("_cv", F.pmod(F.max("order").over(by_user), F.lit(1 << 20)) / unit)
    )
    label = split_labels(
        F.col("_n"),
        F.col("_pos"),
        F.col("_ct"),
        F.col("_cv"),
        valid=valid,
        test=test,
        ops=spark_ops(),
    )
    return staged.withColumn("split", label).drop("order", "_n", "_pos", "_ct", "_cv")


def kcore_filter(
    pairs: DataFrame, *, min_user: int, min_item: int, max_rounds: int
) -> tuple[DataFrame, dict[str, Any]]:
    """Drop users with fewer than ``min_user`` rows and items with fewer than ``min_item``,
    round after round (dropping one side can push the other below its minimum) until a round
    drops nothing (the k-core) or ``max_rounds`` ran. ``pairs`` has one row per (user_key,
    item_id). Each round is two aggregations and two semi-joins in Spark; only counts reach
    the driver. Returns the kept rows (checkpointed) and what the filter did."""
    record: dict[str, Any] = {"min_user": min_user, "min_item": min_item}
    if min_user <= 1 and min_item <= 1:
        return pairs, {**record, "rounds": 0, "converged": True}
    # each round's rows are materialised with their lineage cut (a local checkpoint): a plan
    # that nests every earlier round's joins under cached relations made each later step of
    # the ingest several times slower, even on a few rows
    cur = pairs.localCheckpoint()
    before = n = cur.count()
    rounds, converged = 0, False
    while rounds < max_rounds:
        rounds += 1
        kept = cur
        for col, least in (("user_key", min_user), ("item_id", min_item)):
            if least > 1:
                big = kept.groupBy(col).count().where(F.col("count") >= least).select(col)
                kept = kept.join(big, col, "left_semi")
        kept = kept.localCheckpoint()
        m = kept.count()
        cur = kept
        if m == n:
            converged = True
            break
        n = m
    log.info("ingest: k-core filter kept %d of %d rows in %d round(s)", n, before, rounds)
    return cur, {
        **record,
        "rounds": rounds,
        "converged": converged,
        "rows_before": before,
        "rows_after": n,
    }


def stable_item_index(
    spark: SparkSession, item_ids: DataFrame, *, layout: Layout, partitions: int
) -> tuple[DataFrame, DataFrame]:
    """``(item_id, item_idx)`` for the distinct ``item_ids`` of a log, and the rows to append to
    the ``items`` table: an item it holds keeps its index (a re-ingest of a changed catalogue
    never renumbers one, so item requests keep pointing at the same item), and new items are
    numbered from the table's largest index + 1 in item id order.

    No step runs on one partition: the new ids are range-partitioned by id, numbered within
    each partition, and offset by the sizes of the partitions before it (one row per partition
    reaches the driver)."""
    old = (
        spark.read.format("delta").load(layout.items).select("item_id", "item_idx")
        if table_exists(spark, layout.items)
        else spark.createDataFrame([], "item_id string, item_idx int")
    )
    top = old.agg(F.max("item_idx")).first()
    start = top[0] if top is not None else None
    start = 0 if start is None else int(start) + 1
    new = (
        item_ids.join(old, "item_id", "left_anti")
        .repartitionByRange(partitions, "item_id")
        .withColumn("_pid", F.spark_partition_id())
    )
    new = new.withColumn(
        "_r", F.row_number().over(Window.partitionBy("_pid").orderBy("item_id")) - 1
    ).persist()
    sizes = sorted((r["_pid"], r["count"]) for r in new.groupBy("_pid").count().collect())
    offsets, total = [], start
    for pid, n in sizes:
        offsets.append((pid, total))
        total += n
    offset = spark.createDataFrame(offsets, "_pid int, _off long")
    added = (
        new.join(F.broadcast(offset), "_pid").select(
            "item_id", (F.col("_off") + F.col("_r")).cast("int").alias("item_idx")
        )
    ).persist()
    added.count()  # materialised (the caller unpersists it) before the numbering's input goes
    new.unpersist()
    return old.join(item_ids, "item_id", "left_semi").unionByName(added), added


QUARANTINE_SCHEMA = "source string, reason string, fingerprint string, quarantined_at timestamp"


def quarantine_rows(
    spark: SparkSession, rejected: DataFrame, *, layout: Layout, secret: bytes, source: Path
) -> dict[str, int]:
    """Append the malformed rows to the quarantine table as (source file name, reason, keyed
    fingerprint): an HMAC of the row under the pseudonymisation secret, so an operator holding
    the raw log can find each row again, while the table holds no raw id. Returns counts by
    reason (also logged)."""
    rows = rejected.select(
        F.lit(source.name).alias("source"),
        "reason",
        spark_user_key(secret, F.concat(F.lit("quarantine-row:"), F.col("row"))).alias(
            "fingerprint"
        ),
        F.current_timestamp().alias("quarantined_at"),
    ).persist()
    counts = {r["reason"]: int(r["count"]) for r in rows.groupBy("reason").count().collect()}
    if counts:
        write_delta(
            rows, layout.quarantine, mode="append", stats_columns=["reason", "quarantined_at"]
        )
        log.warning(
            "ingest: %d malformed row(s) quarantined (%s)",
            sum(counts.values()),
            ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
        )
    rows.unpersist()
    return counts


@holds_tables("ingest")
def ingest(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout, raw_path: Path, secret: bytes
) -> dict[str, Any]:
    # Spark reads lazily: an input it cannot read at all fails at the first action, which
    # engine_errors turns into a DataError naming the input (bad rows are quarantined instead).
    what = (str(raw_path), f"a {cfg.dataset.format} log")
    quarantined: dict[str, int] = {}
    with engine_errors(*what):
        if cfg.dataset.on_malformed == "quarantine":
            raw, rejected = read_interactions(spark, cfg.dataset, raw_path, quarantine=True)
            quarantined = quarantine_rows(
                spark, rejected, layout=layout, secret=secret, source=raw_path
            )
        else:
            raw = read_interactions(spark, cfg.dataset, raw_path)
    if cfg.dataset.min_rating is not None:
        raw = raw.where(F.col("rating") >= cfg.dataset.min_rating)
    # The split order hashes the raw ids with the seed (inside Spark, never stored), so the
    # same log and seed give the same split whatever the pseudonymisation secret is.
    keyed = raw.select(
        spark_user_key(secret, F.col("raw_user")).alias("user_key"),
        "item_id",
        "rating",
        "ts",
        F.xxhash64(F.lit(cfg.seed), "raw_user", "item_id").alias("order"),
    )
    # One row per (user, item): the latest event wins.
    keyed = keyed.groupBy("user_key", "item_id").agg(
        F.max("rating").alias("rating"), F.max("ts").alias("ts"), F.min("order").alias("order")
    )
    if table_exists(spark, layout.ledger):
        # forgotten users (rows deleted already): their new rows never land. Those of a user
        # whose request is still open land, and that request's delete takes them all.
        gone = (
            spark.read.format("delta")
            .load(layout.ledger)
            .where(F.coalesce(F.col("target_type"), F.lit(USER)) == USER)
            .where(F.col("status").isin(list(FORGOTTEN_STATES)))
            .select("user_key")
            .distinct()
        )
        keyed = keyed.join(gone, "user_key", "left_anti")
    with engine_errors(*what):  # the first actions over the whole log
        keyed, kcore = kcore_filter(
            keyed,
            min_user=cfg.dataset.min_user_interactions,
            min_item=cfg.dataset.min_item_interactions,
            max_rounds=cfg.dataset.kcore_rounds,
        )
        items, new_items = stable_item_index(
            spark,
            keyed.select("item_id").distinct(),
            layout=layout,
            partitions=cfg.spark.shuffle_partitions,
        )
        inter = keyed.join(items, "item_id").select(
            "user_key", "item_idx", "rating", F.col("ts").cast("long").alias("ts"), "order"
        )
        inter = split_per_user(inter, valid=cfg.split.valid, test=cfg.split.test)
        inter = inter.withColumn(
            "shard_id", F.lit(-1)
        ).persist()  # shard: assigned by the partition step
        n_rows = inter.count()
    if n_rows == 0:
        raise DataError(f"{raw_path}: no interactions left to ingest")
    n_new_items = new_items.count()
    write_delta(
        new_items, layout.items, mode="append", stats_columns=["item_idx"]
    )  # never renumbers
    version = write_delta(
        inter,
        layout.interactions,
        partition_by=["shard_id"],
        stats_columns=INTERACTION_STATS,
        user_metadata={"ingest": {"filter": kcore, "rows": n_rows}},
    )
    by_split = (
        inter.groupBy("split")
        .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("user_key").alias("users"))
        .collect()
    )
    n_users = inter.select("user_key").distinct().count()
    inter.unpersist()
    new_items.unpersist()
    stats = {
        "rows": n_rows,
        "users": n_users,
        "items": items.count(),
        "new_items": n_new_items,
        "splits": {r["split"]: int(r["rows"]) for r in by_split},
        "split_users": {r["split"]: int(r["users"]) for r in by_split},
        "table_version": version,
        "quarantined": quarantined,
        "filter": kcore,
    }
    log.info("ingested %s", stats)
    return stats
