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

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from recunlearn.errors import LedgerConflictError

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
T = TypeVar("T")

_CONFLICTS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "ConcurrentWriteException",
    "CommitFailedError",  # delta-rs: a concurrent commit conflicted with this transaction
)


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
                raise LedgerConflictError(
                    f"{what}: still conflicting after {attempts} tries"
                ) from exc
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


def write_delta(
    df: DataFrame,
    path: str,
    *,
    mode: str = "overwrite",
    partition_by: list[str] | None = None,
    stats_columns: list[str] | None = None,
    user_metadata: dict[str, Any] | None = None,
) -> int:
    """Write ``df`` as a Delta table; return the new table version. ``user_metadata`` goes
    into the commit (as JSON; ``DESCRIBE HISTORY`` and ``commit_metadata`` read it back)."""
    w = df.write.format("delta").mode(mode)
    if user_metadata is not None:
        w = w.option("userMetadata", json.dumps(user_metadata, sort_keys=True))
    if mode == "overwrite":
        w = w.option("overwriteSchema", "true")
    if partition_by:
        w = w.partitionBy(*partition_by)
    if stats_columns is not None:
        for k, v in table_properties(stats_columns).items():
            w = w.option(k, v)
    with_retries(lambda: w.save(path), what=f"write {Path(path).name}")
    return delta_version(df.sparkSession, path)


def commit_metadata(path: str, key: str, *, upto: int | None = None) -> dict[str, Any] | None:
    """``user_metadata[key]`` of the latest commit (at or before version ``upto``) of a Delta
    table that recorded one; None if none did, or its commit has left the log."""
    from deltalake import DeltaTable

    for entry in DeltaTable(str(path)).history():  # newest first
        if upto is not None and int(entry.get("version", -1)) > upto:
            continue
        text = entry.get("userMetadata")
        if text:
            found = json.loads(text).get(key)
            if found is not None:
                return dict(found)
    return None


def table_rows(path: str) -> int | None:
    """The rows of a Delta table's current version, from the file statistics in its log (no
    data read); None when a file was written without a row count."""
    counts = open_delta(path).get_add_actions(flatten=True).column("num_records").to_pylist()
    return None if any(c is None for c in counts) else int(sum(counts))


def files_changed(path: str, before: int, after: int) -> dict[str, int]:
    """What the commits after version ``before`` up to ``after`` did to a table's data files:
    the bytes and files they removed and added, and the table's bytes at ``before`` (a
    delete's cost is the removed bytes over the table's: the files it had to rewrite). Read
    from the two versions' file lists, so any writer's commits count alike."""
    from deltalake import DeltaTable

    def files(version: int) -> dict[str, int]:
        adds = DeltaTable(str(path), version=version).get_add_actions(flatten=True)
        return dict(
            zip(adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist(), strict=True)
        )

    old, new = files(before), files(after)
    gone = [p for p in old if p not in new]
    made = [p for p in new if p not in old]
    return {
        "table_bytes": int(sum(old.values())),
        "removed_bytes": int(sum(old[p] for p in gone)),
        "added_bytes": int(sum(new[p] for p in made)),
        "files_removed": len(gone),
        "files_added": len(made),
    }


def split_schema(schema: str) -> list[str]:
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


def arrow_schema(ddl: str) -> Any:
    """The Arrow schema of a Spark DDL string of this module's tables (string, int, long,
    boolean, timestamp (UTC), arrays and structs of those)."""
    import pyarrow as pa

    scalars = {
        "string": pa.string(),
        "int": pa.int32(),
        "long": pa.int64(),
        "boolean": pa.bool_(),
        "double": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }

    def tp(text: str) -> Any:
        text = text.strip()
        if text.startswith("array<"):
            return pa.list_(tp(text[6:-1]))
        if text.startswith("struct<"):
            return pa.struct(
                [
                    pa.field(n.strip(), tp(t))
                    for n, t in (f.split(":", 1) for f in split_schema(text[7:-1]))
                ]
            )
        return scalars[text]

    return pa.schema(
        [
            pa.field(name, tp(rest))
            for name, rest in (col.split(None, 1) for col in split_schema(ddl))
        ]
    )


def create_table(path: str, ddl: str, *, stats_columns: list[str]) -> None:
    """Create an empty Delta table (``ddl`` as for Spark) with the properties of
    ``table_properties``, through delta-rs: no JVM, so the operator's commands that create
    the ledger on first use start none. A table that exists already is left as it is."""
    from deltalake import write_deltalake

    if table_exists(None, path):
        return
    try:
        write_deltalake(
            path,
            arrow_schema(ddl).empty_table(),
            mode="append",
            configuration=table_properties(stats_columns),
        )
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


def open_delta(path: str) -> DeltaTable:
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

    return tbl.cast(
        pa.schema([pa.field(f.name, _plain(f.type, naive_timestamps)) for f in tbl.schema])
    )


def arrow_dataset(
    path: str, *, version: int | None = None, partitions: list[tuple[str, str, Any]] | None = None
) -> Any:
    """A Delta table's files (at ``version``; only those of ``partitions``) as a
    ``pyarrow.dataset``, with the partition values as columns.

    A local table is read through Arrow's own file system: through delta-rs's Python
    file-system handler, Arrow's I/O threads call back into Python, and in 27 of 40 runs here
    the interpreter then aborted at exit ("terminate called without an active exception",
    exit status 134), after the work was done (delta-rs#2184, arrow#34314)."""
    from deltalake import DeltaTable

    dt = DeltaTable(str(path), version=version)
    filesystem = None
    if "://" not in str(path) or str(path).startswith("file://"):
        import pyarrow.fs as pafs

        root = os.path.abspath(str(path).removeprefix("file://"))
        filesystem = pafs.SubTreeFileSystem(root, pafs.LocalFileSystem())
    return dt.to_pyarrow_dataset(filesystem=filesystem, file_pruning_predicate=partitions)


def read_table(
    path: str,
    *,
    version: int | None = None,
    columns: list[str] | None = None,
    partitions: list[tuple[str, str, Any]] | None = None,
    where: Any = None,
    naive_timestamps: bool = False,
) -> Any:
    """A Delta table (at ``version``, default the current one) as an Arrow table, read by
    delta-rs: only the files of ``partitions`` (delta-rs partition filters, e.g.
    ``[("shard_id", "in", ["3"])]``), then the rows matching ``where`` (a
    ``pyarrow.dataset`` expression, applied in memory).

    String views (which delta-rs writes) come back as plain strings, so the files either
    engine wrote read alike; with ``naive_timestamps``, UTC timestamps come back naive, as
    Spark's ``collect`` gives them."""
    tbl = arrow_dataset(path, version=version, partitions=partitions).to_table(columns=columns)
    tbl = _plain_table(tbl, naive_timestamps)
    return tbl if where is None else tbl.filter(where)


def scan_table(
    path: str,
    *,
    columns: list[str],
    version: int | None = None,
    partitions: list[tuple[str, str, Any]] | None = None,
    where: Any = None,
    batch_rows: int = 1 << 20,
) -> Iterator[Any]:
    """``read_table`` (at ``version``, default the current one) in Arrow tables of at most
    ``batch_rows`` rows, each filtered by ``where``: memory bounded by the batch, not by the
    table."""
    import pyarrow as pa

    dataset = arrow_dataset(path, version=version, partitions=partitions)
    for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
        tbl = _plain_table(pa.Table.from_batches([batch]), False)
        yield tbl if where is None else tbl.filter(where)


def read_rows(
    path: str, where: Any = None, columns: list[str] | None = None
) -> list[dict[str, Any]]:
    """The rows of a small Delta table at its current version, as Python dicts like Spark's
    ``Row.asDict(recursive=True)`` (timestamps naive UTC), read by delta-rs; ``where`` as
    in ``read_table``."""
    return read_table(path, columns=columns, where=where, naive_timestamps=True).to_pylist()


def table_arrow_schema(dt: Any) -> Any:
    import pyarrow as pa

    return pa.schema(dt.schema().to_arrow())


def _source(dt: Any, rows: list[dict[str, Any]], extra: tuple[tuple[str, Any], ...] = ()) -> Any:
    """``rows`` as an Arrow table with the Delta table's own schema (missing fields null),
    plus ``extra`` (name, Arrow type) columns."""
    import pyarrow as pa

    schema = table_arrow_schema(dt)
    for name, tp in extra:
        schema = schema.append(pa.field(name, tp))
    return pa.Table.from_pylist([{f: r.get(f) for f in schema.names} for r in rows], schema=schema)


def append_rows(path: str, rows: list[dict[str, Any]], *, what: str) -> None:
    """Append ``rows`` (in the table's schema, missing fields null) through delta-rs, retried
    on a concurrent commit."""
    from deltalake import write_deltalake

    with_retries(
        lambda: write_deltalake(path, _source(open_delta(path), rows), mode="append"), what=what
    )


def merge_into(
    path: str, rows: list[dict[str, Any]], on: str, extra: tuple[tuple[str, Any], ...] = ()
) -> Any:
    """A delta-rs MERGE builder of ``rows`` (source ``s``, in the table's schema plus ``extra``
    columns) into the table at ``path`` (``t``) on the predicate ``on``; the table is opened
    once, at its current version (call it inside ``with_retries``)."""
    dt = open_delta(path)
    return dt.merge(_source(dt, rows, extra), on, source_alias="s", target_alias="t")


def delete_keys(
    spark: SparkSession | None,
    path: str,
    keys: list[Any],
    *,
    on: str | tuple[str, ...] = "user_key",
    partition_filter: str | None = None,
) -> int:
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
        schema = table_arrow_schema(dt)
        batch = pa.table(
            {
                c: pa.array([v[i] for v in values], type=schema.field(c).type)
                for i, c in enumerate(cols)
            }
        )
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

    removed = DeltaTable(path).vacuum(
        retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True
    )
    root = Path(path)
    for crc in root.rglob(".*.crc"):  # Spark's side files: remove those whose data file is gone
        if "_delta_log" not in crc.parts and not (crc.parent / crc.name[1:-4]).exists():
            crc.unlink(missing_ok=True)
    return removed
