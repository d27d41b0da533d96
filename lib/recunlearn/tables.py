"""Where everything lives under ``data_dir``, and small repositories over the Delta tables.

All Delta access goes through here: table properties that keep deleted rows off the disk,
idempotent merges keyed by request id, and bounded retries on Delta's concurrency conflicts.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from recunlearn.errors import LedgerConflictError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
T = TypeVar("T")

# Statuses of a forget request. REVERTED: an attribute edit that a later undo request took back.
# APPROXIMATE: answered by the fast tier (data deleted, touched shard models updated in place
# and published) and waiting for the exact retrain of its shards, which sets COMPLETED.
PENDING, IN_PROGRESS, FAILED, COMPLETED, REJECTED, REVERTED, APPROXIMATE = (
    "pending", "in_progress", "failed", "completed", "rejected", "reverted", "approximate")
OPEN_STATUSES = (PENDING, IN_PROGRESS, FAILED)
# the guarantee column: what the published model version answering the request offers
EXACT = "exact"
# target_type of the ledger's rows: a whole user, an item (every interaction with it), one
# interaction (user_key + item_idx), an attribute edit or its undo
USER, ITEM, INTERACTION, ATTRIBUTE, ATTRIBUTE_UNDO = (
    "user", "item", "interaction", "attribute", "attribute-undo")
DATA_TARGETS = (USER, ITEM, INTERACTION)  # requests that delete rows and retrain shards

_CONFLICTS = (
    "ConcurrentAppendException", "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException", "ConcurrentTransactionException",
    "MetadataChangedException", "ProtocolChangedException", "ConcurrentWriteException",
)


@dataclass(frozen=True)
class Layout:
    """Paths under one data directory."""

    root: Path

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str) -> str:
        return str(self.tables / name)

    @property
    def interactions(self) -> str:
        return self.table("interactions")

    @property
    def items(self) -> str:
        return self.table("items")

    @property
    def shard_map(self) -> str:
        return self.table("shard_map")

    @property
    def ledger(self) -> str:
        return self.table("forget_requests")

    @property
    def audit(self) -> str:
        return self.table("audit")

    @property
    def quarantine(self) -> str:
        """Malformed input rows, by reason and keyed fingerprint (never their content)."""
        return self.table("quarantine")

    @property
    def model_versions(self) -> str:
        return self.table("model_versions")

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def scratch(self) -> Path:
        """Per-job temporary files (Ray spill, exports); removed when the job ends."""
        return self.root / "scratch"


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def with_retries(fn: Callable[[], T], *, what: str, attempts: int = 5) -> T:
    """Run a Delta write, retrying Delta's optimistic-concurrency conflicts (by name)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # Delta raises py4j-wrapped JVM errors; match on the name
            name = type(exc).__name__
            text = str(exc)
            if not any(c == name or c in text for c in _CONFLICTS):
                raise
            if i == attempts - 1:
                raise LedgerConflictError(f"{what}: still conflicting after {attempts} tries") from exc
            delay = 0.2 * 2**i
            log.warning("%s: concurrent Delta write (%s), retry in %.1fs", what, name, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def table_properties(stats_columns: list[str]) -> dict[str, str]:
    """Properties for every table that holds personal data.

    Change data feed and deletion vectors would keep deleted rows on disk; statistics are
    limited to non-personal columns so that no ``user_key`` lands in ``_delta_log`` as a
    min/max value.
    """
    return {
        "delta.enableChangeDataFeed": "false",
        "delta.enableDeletionVectors": "false",
        "delta.dataSkippingStatsColumns": ",".join(stats_columns),
    }


def write_delta(df: DataFrame, path: str, *, mode: str = "overwrite",
                partition_by: list[str] | None = None, stats_columns: list[str] | None = None) -> int:
    """Write ``df`` as a Delta table; return the new table version."""
    w = df.write.format("delta").mode(mode)
    if mode == "overwrite":
        w = w.option("overwriteSchema", "true")
    if partition_by:
        w = w.partitionBy(*partition_by)
    if stats_columns is not None:
        for k, v in table_properties(stats_columns).items():
            w = w.option(k, v)
    with_retries(lambda: w.save(path), what=f"write {Path(path).name}")
    return delta_version(df.sparkSession, path)


def delta_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def delete_keys(spark: SparkSession, path: str, keys: DataFrame, *,
                on: str | tuple[str, ...] = "user_key", partition_filter: str | None = None) -> int:
    """Delete rows whose ``on`` column(s) match a row of ``keys`` through a MERGE with a batch
    table.

    The predicate written to ``_delta_log`` names columns only (``t.user_key = b.user_key``);
    the values stay in the batch DataFrame, so no key or raw id enters the log.
    """
    from delta.tables import DeltaTable

    cols = (on,) if isinstance(on, str) else on
    cond = " AND ".join(f"t.{c} = b.{c}" for c in cols)
    if partition_filter:
        cond = f"{partition_filter} AND {cond}"

    def run() -> None:
        (DeltaTable.forPath(spark, path).alias("t")
         .merge(keys.alias("b"), cond).whenMatchedDelete().execute())

    with_retries(run, what=f"delete from {Path(path).name}")
    return delta_version(spark, path)


def vacuum_now(spark: SparkSession, path: str) -> list[str]:
    """VACUUM with zero retention: every file the current version does not reference leaves
    the disk (files removed by earlier versions, and untracked ones such as a killed writer's
    output); returns them.

    delta-rs does it (the same Delta protocol; what the Ray tasks read with): it lists the
    table once in Rust, where Spark's VACUUM runs two Spark jobs, about 3 s per table here and
    both cores busy. ``spark`` is unused, kept so every table operation has one signature.
    The Hadoop checksum files (``.name.crc``) of removed data files go too."""
    from deltalake import DeltaTable

    removed = DeltaTable(path).vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False,
                                      full=True)
    root = Path(path)
    for crc in root.rglob(".*.crc"):  # Spark's side files: remove those whose data file is gone
        if "_delta_log" not in crc.parts and not (crc.parent / crc.name[1:-4]).exists():
            crc.unlink(missing_ok=True)
    return removed


# --------------------------------------------------------------------------- ledger
LEDGER_SCHEMA = (
    "request_id string, target_type string, user_key string, status string, reason string, "
    "received_at timestamp, updated_at timestamp, started_at timestamp, deleted_at timestamp, "
    "published_at timestamp, completed_at timestamp, shards array<int>, delete_version long, "
    "model_version long, job_id string, evidence string, attribute string, guarantee string, "
    "item_idx int"
)
LEDGER_FIELDS = [f.split()[0] for f in LEDGER_SCHEMA.split(", ")]


class ForgetLedger:
    """The ``forget_requests`` Delta table: append, list pending, update statuses."""

    def __init__(self, spark: SparkSession, path: str) -> None:
        self.spark = spark
        self.path = path

    def ensure(self) -> None:
        if not table_exists(self.spark, self.path):
            empty = self.spark.createDataFrame([], LEDGER_SCHEMA)
            write_delta(empty, self.path, mode="append",
                        stats_columns=["status", "received_at", "updated_at"])
            return
        have = set(self.spark.read.format("delta").load(self.path).columns)
        missing = [f for f in LEDGER_SCHEMA.split(", ") if f.split()[0] not in have]
        if missing:  # a ledger from an older release: add the new columns (null for old rows)
            self.spark.sql(f"ALTER TABLE delta.`{self.path}` ADD COLUMNS ({', '.join(missing)})")

    def _frame(self, rows: list[dict[str, Any]]) -> DataFrame:
        full = [{f: r.get(f) for f in LEDGER_FIELDS} for r in rows]
        return self.spark.createDataFrame(full, LEDGER_SCHEMA)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Insert requests that are not there yet; a known request id is left as it is,
        except a rejected or reverted one, which a valid resubmission re-opens."""
        from delta.tables import DeltaTable

        if not rows:
            return
        self.ensure()
        src = self._frame(rows)

        def run() -> None:
            (DeltaTable.forPath(self.spark, self.path).alias("t")
             .merge(src.alias("s"), "t.request_id = s.request_id")
             .whenMatchedUpdate(
                 condition="t.status IN ('rejected', 'reverted') AND s.status = 'pending'",
                 set={"status": "s.status", "reason": "s.reason", "updated_at": "s.updated_at",
                      "user_key": "s.user_key"})
             .whenNotMatchedInsertAll()
             .execute())

        with_retries(run, what="ledger append")

    def update(self, request_ids: list[str], **fields: Any) -> None:
        """Set the same ``fields`` (and ``updated_at``) on the given requests."""
        self.update_rows([{"request_id": rid, **fields} for rid in request_ids])

    def update_rows(self, rows: list[dict[str, Any]]) -> None:
        """Per-request updates; every row names ``request_id`` and the same set of fields."""
        from delta.tables import DeltaTable

        if not rows:
            return
        stamp = now_utc()
        rows = [{**r, "updated_at": r.get("updated_at", stamp)} for r in rows]
        fields = sorted(set(rows[0]) - {"request_id"})
        src = self._frame(rows)
        sets = {k: f"s.{k}" for k in fields}

        def run() -> None:
            (DeltaTable.forPath(self.spark, self.path).alias("t")
             .merge(src.alias("s"), "t.request_id = s.request_id")
             .whenMatchedUpdate(set=sets).execute())

        with_retries(run, what="ledger update")

    def read(self) -> DataFrame:
        self.ensure()
        return self.spark.read.format("delta").load(self.path)

    def rows(self, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        df = self.read()
        if statuses:
            df = df.where(df.status.isin(list(statuses)))
        return [r.asDict() for r in df.orderBy("received_at", "request_id").collect()]

    def open_requests(self, target_types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        rows = self.rows(OPEN_STATUSES)
        return [r for r in rows if target_types is None or (r["target_type"] or USER) in target_types]


# --------------------------------------------------------------------------- registry
REGISTRY_SCHEMA = (
    "version long, created_at timestamp, status string, manifest string, parent long, "
    "request_ids array<string>, note string"
)


class ModelRegistry:
    """Published model versions. A version row is written only after every step succeeded."""

    def __init__(self, spark: SparkSession, layout: Layout) -> None:
        self.spark = spark
        self.layout = layout
        self.path = layout.model_versions

    def ensure(self) -> None:
        if not table_exists(self.spark, self.path):
            write_delta(self.spark.createDataFrame([], REGISTRY_SCHEMA), self.path, mode="append",
                        stats_columns=["version", "status"])

    def versions(self) -> list[dict[str, Any]]:
        self.ensure()
        df = self.spark.read.format("delta").load(self.path)
        return [r.asDict() for r in df.orderBy("version").collect()]

    def current(self) -> dict[str, Any] | None:
        live = [v for v in self.versions() if v["status"] == "published"]
        return live[-1] if live else None

    def current_manifest(self) -> dict[str, Any] | None:
        cur = self.current()
        return json.loads(Path(cur["manifest"]).read_text()) if cur else None

    def next_version(self) -> int:
        vs = self.versions()
        return (max(v["version"] for v in vs) + 1) if vs else 1

    def publish(self, manifest: dict[str, Any], *, parent: int | None,
                request_ids: list[str], note: str) -> int:
        """Write the manifest atomically, then record the version as published."""
        version = int(manifest["version"])
        folder = self.layout.models / f"v{version:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        final = folder / "manifest.json"
        tmp.replace(final)
        row = {"version": version, "created_at": now_utc(), "status": "published",
               "manifest": str(final), "parent": parent, "request_ids": request_ids, "note": note}
        df = self.spark.createDataFrame([row], REGISTRY_SCHEMA)
        with_retries(lambda: df.write.format("delta").mode("append").save(self.path),
                     what="publish model version")
        return version

    def retire(self, versions: list[int], note: str) -> None:
        from delta.tables import DeltaTable

        if not versions:
            return
        src = self.spark.createDataFrame([(int(v), note) for v in versions], "version long, note string")
        with_retries(lambda: (DeltaTable.forPath(self.spark, self.path).alias("t")
                              .merge(src.alias("s"), "t.version = s.version")
                              .whenMatchedUpdate(set={"status": "'retired'", "note": "s.note"})
                              .execute()), what="retire model versions")


# --------------------------------------------------------------------------- audit
AUDIT_SCHEMA = (
    "request_id string, user_key string, audited_at timestamp, model_version long, "
    "passed boolean, parquet_rows_found long, delta_log_hits long, stale_published_shards long, "
    "stale_checkpoints long, key_in_published_model boolean, guarantee string, details string"
)


def append_audit(spark: SparkSession, path: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields = [f.split()[0] for f in AUDIT_SCHEMA.split(", ")]
    df = spark.createDataFrame([{f: r.get(f) for f in fields} for r in rows], AUDIT_SCHEMA)
    with_retries(lambda: df.write.format("delta").mode("append")
                 .options(**table_properties(["audited_at", "model_version"])).save(path),
                 what="audit append")
