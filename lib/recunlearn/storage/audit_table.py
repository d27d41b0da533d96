"""The audit table: one row per request audited against a published version (delta-rs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recunlearn.storage.delta import append_rows, create_table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

AUDIT_SCHEMA = (
    "request_id string, user_key string, audited_at timestamp, model_version long, "
    "passed boolean, parquet_rows_found long, delta_log_hits long, stale_published_shards long, "
    "stale_checkpoints long, key_in_published_model boolean, guarantee string, details string"
)


def append_audit(spark: SparkSession | None, path: str, rows: list[dict[str, Any]]) -> None:
    """Append audit results (through delta-rs; ``spark`` is unused)."""
    if not rows:
        return
    create_table(path, AUDIT_SCHEMA, stats_columns=["audited_at", "model_version"])
    append_rows(path, rows, what="audit append")
