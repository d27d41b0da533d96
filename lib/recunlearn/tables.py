"""Where everything lives under ``data_dir``, and small repositories over the Delta tables.

All Delta access goes through here: table properties that keep deleted rows off the disk,
idempotent merges keyed by request id, and bounded retries on Delta's concurrency conflicts.

Two engines write the same tables through the Delta protocol. Spark (delta-spark) creates
them and does the bulk work: ingest, partitioning, scans over the interaction log. The
per-request bookkeeping (the ledger's and the registry's reads and transitions, the delete
of a batch of keys from the touched shards, VACUUM) goes through delta-rs in the driver: a
small Spark MERGE spends 1-3 s planning its jobs, the same commit in delta-rs tens of
milliseconds, and a forget request makes about ten of them. Both commit with put-if-absent
on the log, so their optimistic concurrency control sees each other's commits.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from recunlearn.errors import LedgerConflictError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
T = TypeVar("T")

# The request state machine. A data request (user, item, interaction) moves
#   received -> planned -> deleted -> retrained -> verified
# (planned: its shards are recorded; deleted: its rows are deleted and vacuumed; retrained: a
# version without them is published; verified: the audit found nothing of it), or to rejected
# with a reason. The fast tier answers between deleted and retrained: approximate (touched
# shard models updated in place and published) until the exact retrain of its shards. An
# attribute edit moves received -> planned -> applied, and to reverted when undone. A failed job
# leaves the state where it was, with the error in ``reason``: the rerun goes on from there.
RECEIVED, PLANNED, DELETED, APPROXIMATE, RETRAINED, VERIFIED = (
    "received", "planned", "deleted", "approximate", "retrained", "verified")
REJECTED, APPLIED, REVERTED = "rejected", "applied", "reverted"
STATES = (RECEIVED, PLANNED, DELETED, APPROXIMATE, RETRAINED, VERIFIED, REJECTED, APPLIED, REVERTED)
# the states each state is entered from (a state entered from itself: by a later job run)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    RECEIVED: (REJECTED, REVERTED),  # a valid resubmission re-opens the request
    PLANNED: (RECEIVED, PLANNED),
    DELETED: (PLANNED,),
    APPROXIMATE: (DELETED,),
    RETRAINED: (DELETED, APPROXIMATE),
    VERIFIED: (RETRAINED,),
    REJECTED: (RECEIVED, PLANNED),
    APPLIED: (PLANNED,),
    REVERTED: (RECEIVED, PLANNED, APPLIED),
}
# the reasons a job run records without moving the state, cleared by the next transition
_ERROR_PREFIX, _AUDIT_PREFIX = "failed in ", "audit by "
OPEN_STATUSES = (RECEIVED, PLANNED, DELETED)  # a data request the exact path has still to retrain
# not yet answered exactly (an approximate answer leaves the exact retrain due): the deadline runs
AWAITING_STATUSES = (RECEIVED, PLANNED, DELETED, APPROXIMATE)
FORGOTTEN_STATUSES = (DELETED, APPROXIMATE, RETRAINED, VERIFIED)  # its rows are gone
# what an older ledger's statuses become (failed: the state its recorded fields show)
_LEGACY_STATUS = """CASE status
  WHEN 'pending' THEN 'received'
  WHEN 'in_progress' THEN 'planned'
  WHEN 'failed' THEN CASE WHEN target_type IN ('attribute', 'attribute-undo') THEN 'received'
                          WHEN deleted_at IS NOT NULL THEN 'deleted'
                          WHEN shards IS NOT NULL THEN 'planned' ELSE 'received' END
  WHEN 'completed' THEN CASE WHEN target_type IN ('attribute', 'attribute-undo') THEN 'applied'
                             ELSE 'retrained' END
  ELSE status END"""
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
    "CommitFailedError",  # delta-rs: a concurrent commit conflicted with this transaction
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


def new_job_id(kind: str) -> str:
    """A job run's id: its kind, start time and a random suffix."""
    return f"{kind}-{now_utc().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"


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


def arrow_schema(ddl: str) -> Any:
    """The Arrow schema of a Spark DDL string of this module's tables (string, int, long,
    boolean, timestamp (UTC), arrays and structs of those)."""
    import pyarrow as pa

    scalars = {"string": pa.string(), "int": pa.int32(), "long": pa.int64(), "boolean": pa.bool_(),
               "double": pa.float64(), "timestamp": pa.timestamp("us", tz="UTC")}

    def tp(text: str) -> Any:
        text = text.strip()
        if text.startswith("array<"):
            return pa.list_(tp(text[6:-1]))
        if text.startswith("struct<"):
            return pa.struct([pa.field(n.strip(), tp(t)) for n, t in
                              (f.split(":", 1) for f in _split_schema(text[7:-1]))])
        return scalars[text]

    return pa.schema([pa.field(name, tp(rest)) for name, rest in
                      (col.split(None, 1) for col in _split_schema(ddl))])


def create_table(path: str, ddl: str, *, stats_columns: list[str]) -> None:
    """Create an empty Delta table (``ddl`` as for Spark) with the properties of
    ``table_properties``, through delta-rs: no JVM, so the operator's commands that create
    the ledger on first use start none. A table that exists already is left as it is."""
    from deltalake import write_deltalake

    if table_exists(None, path):
        return
    try:
        write_deltalake(path, arrow_schema(ddl).empty_table(), mode="append",
                        configuration=table_properties(stats_columns))
    except Exception as exc:  # two writers created it at once: the other one's table stands
        if not table_exists(None, path):
            raise
        log.debug("create %s: created concurrently (%s)", Path(path).name, type(exc).__name__)


def delta_version(spark: SparkSession | None, path: str) -> int:
    """The table's current version (read from its log by delta-rs; ``spark`` is unused)."""
    return int(open_delta(path).version())


def table_exists(spark: SparkSession | None, path: str) -> bool:
    from deltalake import DeltaTable

    return bool(DeltaTable.is_deltatable(str(path)))


def open_delta(path: str):  # noqa: ANN202 - deltalake.DeltaTable, imported lazily
    from deltalake import DeltaTable

    return DeltaTable(str(path))


def _plain(tp: Any, naive_timestamps: bool) -> Any:
    """An Arrow type with its string views plain strings (what the compute kernels take) and,
    with ``naive_timestamps``, its UTC timestamps naive (what Spark's ``collect`` returns)."""
    import pyarrow as pa

    if pa.types.is_string_view(tp) or pa.types.is_large_string(tp):
        return pa.string()
    if naive_timestamps and pa.types.is_timestamp(tp) and tp.tz is not None:
        return pa.timestamp(tp.unit)
    if pa.types.is_list(tp):
        return pa.list_(_plain(tp.value_type, naive_timestamps))
    if pa.types.is_struct(tp):
        return pa.struct([pa.field(f.name, _plain(f.type, naive_timestamps)) for f in tp])
    return tp


def _plain_table(tbl: Any, naive_timestamps: bool) -> Any:
    """``tbl`` cast to the types of ``_plain``."""
    import pyarrow as pa

    return tbl.cast(pa.schema([pa.field(f.name, _plain(f.type, naive_timestamps)) for f in tbl.schema]))


def read_table(path: str, *, version: int | None = None, columns: list[str] | None = None,
               partitions: list[tuple[str, str, Any]] | None = None, where: Any = None,
               naive_timestamps: bool = False) -> Any:
    """A Delta table (at ``version``, default the current one) as an Arrow table, read by
    delta-rs: only the files of ``partitions`` (delta-rs partition filters, e.g.
    ``[("shard_id", "in", ["3"])]``), then the rows matching ``where`` (a
    ``pyarrow.dataset`` expression, applied in memory).

    String views (which delta-rs writes) come back as plain strings, so the files either
    engine wrote read alike; with ``naive_timestamps``, UTC timestamps come back naive, as
    Spark's ``collect`` gives them. (``DeltaTable.to_pyarrow_table`` is not used: on this
    platform it leaves a thread that aborts the interpreter at exit.)"""
    from deltalake import DeltaTable

    dt = DeltaTable(str(path), version=version)
    tbl = dt.to_pyarrow_dataset(file_pruning_predicate=partitions).to_table(columns=columns)
    tbl = _plain_table(tbl, naive_timestamps)
    return tbl if where is None else tbl.filter(where)


def scan_table(path: str, *, columns: list[str], partitions: list[tuple[str, str, Any]] | None = None,
               where: Any = None, batch_rows: int = 1 << 20) -> Iterator[Any]:
    """``read_table`` (current version) in Arrow tables of at most ``batch_rows`` rows, each
    filtered by ``where``: memory bounded by the batch, not by the table."""
    import pyarrow as pa
    from deltalake import DeltaTable

    dataset = DeltaTable(str(path)).to_pyarrow_dataset(file_pruning_predicate=partitions)
    for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
        tbl = _plain_table(pa.Table.from_batches([batch]), False)
        yield tbl if where is None else tbl.filter(where)


def read_rows(path: str, where: Any = None, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a small Delta table at its current version, as Python dicts like Spark's
    ``Row.asDict(recursive=True)`` (timestamps naive UTC), read by delta-rs; ``where`` as
    in ``read_table``."""
    return read_table(path, columns=columns, where=where, naive_timestamps=True).to_pylist()


def _arrow_schema(dt: Any) -> Any:
    import pyarrow as pa

    return pa.schema(dt.schema().to_arrow())


def _source(dt: Any, rows: list[dict[str, Any]], extra: list[tuple[str, Any]] = ()) -> Any:
    """``rows`` as an Arrow table with the Delta table's own schema (missing fields null),
    plus ``extra`` (name, Arrow type) columns."""
    import pyarrow as pa

    schema = _arrow_schema(dt)
    for name, tp in extra:
        schema = schema.append(pa.field(name, tp))
    return pa.Table.from_pylist([{f: r.get(f) for f in schema.names} for r in rows], schema=schema)


def append_rows(path: str, rows: list[dict[str, Any]], *, what: str) -> None:
    """Append ``rows`` (in the table's schema, missing fields null) through delta-rs, retried
    on a concurrent commit."""
    from deltalake import write_deltalake

    with_retries(lambda: write_deltalake(path, _source(open_delta(path), rows), mode="append"), what=what)


def merge_into(path: str, rows: list[dict[str, Any]], on: str, extra: list[tuple[str, Any]] = ()) -> Any:
    """A delta-rs MERGE builder of ``rows`` (source ``s``, in the table's schema plus ``extra``
    columns) into the table at ``path`` (``t``) on the predicate ``on``; the table is opened
    once, at its current version (call it inside ``with_retries``)."""
    dt = open_delta(path)
    return dt.merge(_source(dt, rows, extra), on, source_alias="s", target_alias="t")


def delete_keys(spark: SparkSession | None, path: str, keys: list[Any], *,
                on: str | tuple[str, ...] = "user_key", partition_filter: str | None = None) -> int:
    """Delete rows whose ``on`` column(s) equal one of ``keys`` (values, or tuples for
    several columns) through a MERGE with a batch table (delta-rs); return the new version.

    The predicate written to ``_delta_log`` names columns only (``t.user_key = b.user_key``,
    with ``partition_filter`` on non-personal columns such as ``t.shard_id IN (3)``, which
    prunes the scan to the touched shards); the values stay in the batch table, so no key or
    raw id enters the log. Files are rewritten without the rows (no deletion vectors); VACUUM
    then removes the old ones. ``spark`` is unused.
    """
    import pyarrow as pa

    cols = (on,) if isinstance(on, str) else tuple(on)
    if not keys:
        return delta_version(spark, path)
    values = [k if isinstance(k, tuple) else (k,) for k in keys]
    cond = " AND ".join(f"t.{c} = b.{c}" for c in cols)
    if partition_filter:
        cond = f"{partition_filter} AND {cond}"

    def run() -> int:
        dt = open_delta(path)
        schema = _arrow_schema(dt)
        batch = pa.table({c: pa.array([v[i] for v in values], type=schema.field(c).type)
                          for i, c in enumerate(cols)})
        dt.merge(batch, cond, source_alias="b", target_alias="t").when_matched_delete().execute()
        return int(dt.version())

    return with_retries(run, what=f"delete from {Path(path).name}")


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
def _split_schema(schema: str) -> list[str]:
    """The column definitions of a DDL string (commas inside ``<...>`` do not split)."""
    out, depth, cur = [], 0, ""
    for ch in schema:
        depth += (ch == "<") - (ch == ">")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()] if cur.strip() else out


LEDGER_SCHEMA = (
    "request_id string, target_type string, user_key string, status string, reason string, "
    "received_at timestamp, updated_at timestamp, started_at timestamp, deleted_at timestamp, "
    "published_at timestamp, completed_at timestamp, shards array<int>, delete_version long, "
    "model_version long, job_id string, evidence string, attribute string, guarantee string, "
    "item_idx int, history array<struct<state:string,job_id:string,at:timestamp>>"
)
LEDGER_COLUMNS = _split_schema(LEDGER_SCHEMA)
LEDGER_FIELDS = [f.split()[0] for f in LEDGER_COLUMNS]


class ForgetLedger:
    """The ``forget_requests`` Delta table: one row per request id, its state and its history
    (one ``(state, job_id, at)`` entry per transition). Every access goes through delta-rs
    (see the module's note), creation and the upgrade of an older ledger too, so no JVM is
    needed to file or read requests; ``spark`` is unused."""

    def __init__(self, spark: SparkSession | None, path: str) -> None:
        self.spark = spark
        self.path = path
        self._ready = False

    def ensure(self) -> None:
        if self._ready:
            return
        if not table_exists(None, self.path):
            create_table(self.path, LEDGER_SCHEMA, stats_columns=["status", "received_at", "updated_at"])
        else:
            dt = open_delta(self.path)
            have = set(_arrow_schema(dt).names)
            missing = [f for f in LEDGER_COLUMNS if f.split()[0] not in have]
            if missing:  # a ledger from an older release: add the new columns (null for old rows)
                from deltalake import Schema

                dt.alter.add_columns(list(Schema.from_arrow(arrow_schema(", ".join(missing))).fields))
                if "history" in {f.split()[0] for f in missing}:  # its statuses predate the states
                    with_retries(lambda: open_delta(self.path).update(updates={"status": _LEGACY_STATUS}),
                                 what="ledger upgrade")
        self._ready = True

    def _merge(self, rows: list[dict[str, Any]], extra: list[tuple[str, Any]] = ()) -> Any:
        return merge_into(self.path, rows, "t.request_id = s.request_id", extra)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Insert requests that are not there yet; a known request id is left as it is (a
        rejected or reverted one is re-opened by ``transition(..., RECEIVED)``)."""
        if not rows:
            return
        self.ensure()
        stamp = now_utc()
        src = [{**r, "history": r.get("history") or [
            {"state": r["status"], "job_id": r.get("job_id") or "intake", "at": r.get("updated_at") or stamp}]}
            for r in rows]
        with_retries(lambda: self._merge(src).when_not_matched_insert_all().execute(), what="ledger append")

    def transition(self, rows: list[dict[str, Any]], state: str, *, job_id: str,
                   strict: bool = True) -> int:
        """Move the requests of ``rows`` (each names ``request_id`` and the same other fields)
        to ``state`` in one Delta MERGE, keyed by request and job run: a request moves only from
        a state ``TRANSITIONS`` allows, and a transition this job run made already is not made
        again (a retried write changes nothing). A failed run's error in ``reason`` is cleared,
        unless the rows set ``reason``.

        The rows are read, their new history computed, and the MERGE updates a row only if its
        state and history length are still the ones read (compare-and-set: a transition another
        writer made in between is never overwritten).

        Returns how many requests moved. With ``strict``, a request that neither moved nor had
        moved already raises ``LedgerConflictError`` (another writer got there first)."""
        import pyarrow as pa

        if not rows:
            return 0
        if state not in TRANSITIONS:
            raise ValueError(f"unknown request state {state!r}")
        self.ensure()
        stamp = now_utc()
        rows = [{**r, "updated_at": r.get("updated_at", stamp), "status": state, "job_id": job_id}
                for r in rows]
        fields = sorted(set(rows[0]) - {"request_id"})
        sets = {k: f"s.{k}" for k in fields} | {"history": "s.history"}
        if "reason" not in sets:  # an error of an earlier run goes; a reason of record stays
            sets["reason"] = (f"CASE WHEN t.reason LIKE '{_ERROR_PREFIX}%' OR t.reason LIKE '{_AUDIT_PREFIX}%' "
                              "THEN NULL ELSE t.reason END")
        cond = "t.status = s.from_status AND coalesce(array_length(t.history), 0) = s.from_length"

        def run() -> int:
            now = {r["request_id"]: r for r in self.rows_for([r["request_id"] for r in rows])}
            moves = []
            for r in rows:
                cur = now.get(r["request_id"])
                if cur is None or cur["status"] not in TRANSITIONS[state]:
                    continue
                history = cur["history"] or []
                if any(h["state"] == state and h["job_id"] == job_id for h in history):
                    continue  # this job run made it already
                moves.append({**r, "from_status": cur["status"], "from_length": len(history),
                              "history": [*history, {"state": state, "job_id": job_id, "at": r["updated_at"]}]})
            if not moves:
                return 0
            metrics = self._merge(moves, [("from_status", pa.string()), ("from_length", pa.int64())]) \
                .when_matched_update(updates=sets, predicate=cond).execute()
            return int(metrics["num_target_rows_updated"])

        moved = with_retries(run, what=f"ledger -> {state}")
        if strict and moved < len(rows):
            ids = [r["request_id"] for r in rows]
            now = {r["request_id"]: r for r in self.rows_for(ids)}
            stuck = [rid for rid in ids if not (now.get(rid, {}).get("status") == state and any(
                h["state"] == state and h["job_id"] == job_id for h in now[rid]["history"] or []))]
            if stuck:
                raise LedgerConflictError(
                    f"ledger: {len(stuck)} request(s) could not move to {state} "
                    f"(now {sorted({now.get(r, {}).get('status', 'missing') for r in stuck})}; "
                    f"e.g. {stuck[0][:12]}): another job changed them")
        return moved

    def note_error(self, request_ids: list[str], *, job_id: str, error: BaseException) -> None:
        """Record a failed job run's error on its requests; their state stays where it was."""
        if request_ids:
            self.update(request_ids, reason=f"{_ERROR_PREFIX}{job_id}: {type(error).__name__}: {str(error)[:400]}")

    def note_audit_failure(self, request_ids: list[str], *, job_id: str, version: int) -> None:
        """Record a failed audit on its requests; their state stays where it was."""
        if request_ids:
            self.update(request_ids, reason=f"{_AUDIT_PREFIX}{job_id} failed against v{version}")

    def update(self, request_ids: list[str], **fields: Any) -> None:
        """Set the same ``fields`` (and ``updated_at``) on the given requests; not the state
        (``transition`` moves it)."""
        self.update_rows([{"request_id": rid, **fields} for rid in request_ids])

    def update_rows(self, rows: list[dict[str, Any]]) -> None:
        """Per-request updates of fields other than the state; every row names ``request_id``
        and the same set of fields."""
        if not rows:
            return
        if any("status" in r for r in rows):
            raise ValueError("ForgetLedger.update_rows does not change states: use transition()")
        self.ensure()
        stamp = now_utc()
        rows = [{**r, "updated_at": r.get("updated_at", stamp)} for r in rows]
        sets = {k: f"s.{k}" for k in sorted(set(rows[0]) - {"request_id"})}
        with_retries(lambda: self._merge(rows).when_matched_update(updates=sets).execute(),
                     what="ledger update")

    def rows(self, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The requests (in ``statuses``), oldest first."""
        import pyarrow.dataset as ds

        self.ensure()
        out = read_rows(self.path, ds.field("status").isin(list(statuses)) if statuses else None)
        # Spark's order: received_at ascending, nulls first, then the request id
        return sorted(out, key=lambda r: (r["received_at"] is not None, r["received_at"] or datetime.min,
                                          r["request_id"] or ""))

    def rows_for(self, request_ids: list[str]) -> list[dict[str, Any]]:
        import pyarrow.dataset as ds

        self.ensure()
        return read_rows(self.path, ds.field("request_id").isin(list(request_ids)))

    def open_requests(self, target_types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Requests not yet through: data requests before ``retrained``, attribute requests
        before ``applied``."""
        rows = self.rows((RECEIVED, PLANNED, DELETED))
        return [r for r in rows if target_types is None or (r["target_type"] or USER) in target_types]


def request_ages(rows: list[dict[str, Any]], *, deadline_days: float,
                 now: datetime | None = None) -> list[dict[str, Any]]:
    """Each request still awaiting its answer (``AWAITING_STATUSES``), oldest first: its id,
    state, age in days since receipt and whether that is past ``deadline_days``. ``rows`` as
    ``ForgetLedger.rows`` gives them (naive UTC timestamps)."""
    now = (now or now_utc()).replace(tzinfo=None)
    out = [{"request_id": r["request_id"], "target_type": r["target_type"] or USER, "status": r["status"],
            "received_at": r["received_at"],
            "age_days": round((now - r["received_at"]).total_seconds() / 86400, 3)}
           for r in rows if r["status"] in AWAITING_STATUSES and r["received_at"] is not None]
    for r in out:
        r["overdue"] = r["age_days"] > deadline_days
    return sorted(out, key=lambda r: -r["age_days"])


# --------------------------------------------------------------------------- audit
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
