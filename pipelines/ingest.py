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
from recunlearn.errors import DataError
from recunlearn.joblock import holds_tables
from recunlearn.pseudonym import spark_user_key
from recunlearn.readers import read_interactions
from recunlearn.tables import FORGOTTEN_STATUSES, USER, Layout, table_exists, write_delta

log = logging.getLogger(__name__)

INTERACTION_STATS = ["item_idx", "split", "rating", "ts"]  # never user_key: see tables.py


def split_per_user(df: DataFrame, *, valid: float, test: float) -> DataFrame:
    """Add ``split``: per user, rows ordered by their ``order`` hash; the last shares go to
    valid and test (floor of n*share each), so every user keeps at least one training row."""
    w = Window.partitionBy("user_key").orderBy(F.col("order"), F.col("item_idx"))
    n = F.count(F.lit(1)).over(Window.partitionBy("user_key"))
    pos = F.row_number().over(w) - 1
    n_test = F.floor(n * test)
    n_valid = F.floor(n * valid)
    return df.withColumn(
        "split",
        F.when(pos >= n - n_test, "test").when(pos >= n - n_test - n_valid, "valid").otherwise("train"),
    ).drop("order")


QUARANTINE_SCHEMA = "source string, reason string, fingerprint string, quarantined_at timestamp"


def quarantine_rows(spark: SparkSession, rejected: DataFrame, *, layout: Layout, secret: bytes,
                    source: Path) -> dict[str, int]:
    """Append the malformed rows to the quarantine table as (source file name, reason, keyed
    fingerprint): an HMAC of the row under the pseudonymisation secret, so an operator holding
    the raw log can find each row again, while the table holds no raw id. Returns counts by
    reason (also logged)."""
    rows = rejected.select(F.lit(source.name).alias("source"), "reason",
                           spark_user_key(secret, F.concat(F.lit("quarantine-row:"), F.col("row")))
                           .alias("fingerprint"),
                           F.current_timestamp().alias("quarantined_at")).persist()
    counts = {r["reason"]: int(r["count"]) for r in rows.groupBy("reason").count().collect()}
    if counts:
        write_delta(rows, layout.quarantine, mode="append", stats_columns=["reason", "quarantined_at"])
        log.warning("ingest: %d malformed row(s) quarantined (%s)", sum(counts.values()),
                    ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    rows.unpersist()
    return counts


@holds_tables("ingest")
def ingest(spark: SparkSession, *, cfg: RunConfig, layout: Layout, raw_path: Path,
           secret: bytes) -> dict[str, Any]:
    quarantined: dict[str, int] = {}
    if cfg.dataset.on_malformed == "quarantine":
        raw, rejected = read_interactions(spark, cfg.dataset, raw_path, quarantine=True)
        quarantined = quarantine_rows(spark, rejected, layout=layout, secret=secret, source=raw_path)
    else:
        raw = read_interactions(spark, cfg.dataset, raw_path)
    if cfg.dataset.min_rating is not None:
        raw = raw.where(F.col("rating") >= cfg.dataset.min_rating)
    # The split order hashes the raw ids with the seed (inside Spark, never stored), so the
    # same log and seed give the same split whatever the pseudonymisation secret is.
    keyed = raw.select(spark_user_key(secret, F.col("raw_user")).alias("user_key"), "item_id",
                       "rating", "ts", F.xxhash64(F.lit(cfg.seed), "raw_user", "item_id").alias("order"))
    # One row per (user, item): the latest event wins.
    keyed = keyed.groupBy("user_key", "item_id").agg(F.max("rating").alias("rating"),
                                                     F.max("ts").alias("ts"), F.min("order").alias("order"))
    if table_exists(spark, layout.ledger):
        # forgotten users (rows deleted already): their new rows never land. Those of a user
        # whose request is still open land, and that request's delete takes them all.
        gone = (spark.read.format("delta").load(layout.ledger)
                .where(F.coalesce(F.col("target_type"), F.lit(USER)) == USER)
                .where(F.col("status").isin(list(FORGOTTEN_STATUSES))).select("user_key").distinct())
        keyed = keyed.join(gone, "user_key", "left_anti")
    items = (keyed.select("item_id").distinct()
             .withColumn("item_idx", F.dense_rank().over(Window.orderBy("item_id")) - 1)
             .withColumn("item_idx", F.col("item_idx").cast("int")))
    inter = (keyed.join(F.broadcast(items), "item_id")
             .select("user_key", "item_idx", "rating", F.col("ts").cast("long").alias("ts"), "order"))
    inter = split_per_user(inter, valid=cfg.split.valid, test=cfg.split.test)
    inter = inter.withColumn("shard_id", F.lit(-1))  # assigned by the partition step
    inter = inter.persist()
    n_rows = inter.count()
    if n_rows == 0:
        raise DataError(f"{raw_path}: no interactions left to ingest")
    write_delta(items, layout.items, stats_columns=["item_idx"])
    version = write_delta(inter, layout.interactions, partition_by=["shard_id"],
                          stats_columns=INTERACTION_STATS)
    counts = {r["split"]: r["count"] for r in inter.groupBy("split").count().collect()}
    n_users = inter.select("user_key").distinct().count()
    inter.unpersist()
    stats = {"rows": n_rows, "users": n_users, "items": items.count(), "splits": counts,
             "table_version": version, "quarantined": quarantined}
    log.info("ingested %s", stats)
    return stats
