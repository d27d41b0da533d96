"""Disk scans behind the audit: Parquet files that still hold forgotten rows, and
``_delta_log`` files that mention a forgotten key or raw id.

The log scan looks where values can land in a Delta log: predicates and parameters in
``commitInfo``, min/max statistics and partition values of ``add``/``remove`` actions,
``metaData`` configuration, and the same inside checkpoint Parquet files. Raw ids are matched
as whole tokens (ids such as ``42`` would otherwise match every number in the log);
partition values of our own partition column (``shard_id``) are skipped for raw ids.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_TOKEN = re.compile(r"[\w.@:+-]+")
EVIDENCE_TABLES = ("forget_requests", "audit")  # hold keys as evidence, never interactions


def folder_bytes(root: Path) -> int:
    """Bytes of every file under ``root`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


def storage_bytes(root: Path) -> dict[str, int]:
    """Bytes on disk under each direct sub-folder of ``root`` (one per Delta table, ...)."""
    return (
        {d.name: folder_bytes(d) for d in sorted(root.iterdir()) if d.is_dir()}
        if root.is_dir()
        else {}
    )


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)


def rows_with_keys(root: Path, keys: Iterable[str]) -> dict[str, int]:
    """Per key, rows in any data Parquet file (any table, any version) outside the evidence
    tables that carry that ``user_key``."""
    keys = sorted(set(keys))
    found: Counter[str] = Counter()
    if not keys:
        return {}
    for path in parquet_files(root):
        if any(t in path.parts for t in EVIDENCE_TABLES):
            continue
        if "user_key" not in pq.read_schema(path).names:
            continue
        col = (
            pq.read_table(path, columns=["user_key"]).column("user_key").cast(pa.string())
        )  # or a view
        hits = pc.filter(col, pc.is_in(col, value_set=pa.array(keys)))
        found.update(hits.to_pylist())
    return {k: found.get(k, 0) for k in keys}


def rows_with_items(root: Path, items: Iterable[int]) -> dict[int, int]:
    """Per item index, rows in any data Parquet file (outside the evidence tables) with it."""
    items = sorted({int(i) for i in items})
    found: Counter[int] = Counter()
    for path in _data_files(root, ("item_idx", "user_key")) if items else []:
        col = pq.read_table(path, columns=["item_idx"]).column("item_idx").cast(pa.int64())
        found.update(
            pc.filter(col, pc.is_in(col, value_set=pa.array(items, pa.int64()))).to_pylist()
        )
    return {i: found.get(i, 0) for i in items}


def rows_with_pairs(root: Path, pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Per (user_key, item index), rows in any data Parquet file (outside the evidence tables)."""
    pairs = sorted({(str(k), int(i)) for k, i in pairs})
    wanted = pa.array([f"{k}\x00{i}" for k, i in pairs])
    found: Counter[str] = Counter()
    for path in _data_files(root, ("item_idx", "user_key")) if pairs else []:
        t = pq.read_table(path, columns=["user_key", "item_idx"])
        joined = pc.binary_join_element_wise(
            t.column("user_key").cast(pa.string()),
            pc.cast(t.column("item_idx"), pa.string()),
            "\x00",
        )
        found.update(pc.filter(joined, pc.is_in(joined, value_set=wanted)).to_pylist())
    return {p: found.get(f"{p[0]}\x00{p[1]}", 0) for p in pairs}


def _data_files(root: Path, columns: tuple[str, ...]) -> list[Path]:
    return [
        p
        for p in parquet_files(root)
        if not any(t in p.parts for t in EVIDENCE_TABLES)
        and set(columns) <= set(pq.read_schema(p).names)
    ]


def _strings(value: Any) -> Iterable[str]:
    """The string leaves of a log value (JSON inside a string included). Numbers are not
    strings here: the numeric statistics and metrics of a log (item indexes, ratings,
    timestamps, row counts, sizes) are not identifiers, and a raw id such as MovieLens' "47"
    matched against them would be a false hit in every table with 48 items. A raw id inside
    a string (a delete predicate, a partition value) is still found."""
    if isinstance(value, str):
        yield value
        if value[:1] in "[{":
            try:
                yield from _strings(json.loads(value))
            except ValueError:
                pass
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _action_values(action: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(values where raw ids could appear, partition values) of one log action."""
    values: list[str] = []
    parts: list[str] = []
    if "commitInfo" in action:
        values += list(_strings(action["commitInfo"].get("operationParameters")))
        values += list(_strings(action["commitInfo"].get("userMetadata")))
    for kind in ("add", "remove"):
        if kind in action and action[kind]:
            a = action[kind]
            stats = a.get("stats")
            if stats:
                st = json.loads(stats) if isinstance(stats, str) else stats
                values += list(_strings(st.get("minValues"))) + list(_strings(st.get("maxValues")))
            parts += list(_strings(a.get("partitionValues")))
    if "metaData" in action and action["metaData"]:
        values += list(_strings(action["metaData"].get("configuration")))
    return values, parts


def _log_actions(path: Path) -> Iterable[dict[str, Any]]:
    if path.suffix == ".json":
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)
    elif path.suffix == ".parquet":
        for row in pq.read_table(path).to_pylist():
            yield {k: v for k, v in row.items() if v is not None}
    elif path.suffix == ".crc":
        # A checksum file repeats the table metadata and, for small tables, every live file.
        crc = json.loads(path.read_text())
        yield {"metaData": crc.get("metadata")}
        for f in crc.get("allFiles") or []:
            yield {"add": f}


def _hadoop_checksum(path: Path) -> bool:
    """Hadoop's local file system writes ``.NAME.crc`` beside each file: a binary CRC32 of
    the sibling's bytes, which holds no values of its own."""
    return path.name.startswith(".") and path.name.endswith(".crc")


def delta_log_hits(
    root: Path, *, keys: Iterable[str], raw_ids: Iterable[str] | dict[str, str] = ()
) -> dict[str, list[str]]:
    """Log files that mention a forgotten ``user_key`` (outside the evidence tables) or a raw
    id (anywhere). ``raw_ids`` may map each raw id to the label reported for it (never the id
    itself). Returns {file: [what matched]}."""
    keys = set(keys)
    raw = (
        raw_ids
        if isinstance(raw_ids, dict)
        else {str(r): f"raw id #{i}" for i, r in enumerate(sorted(map(str, raw_ids)))}
    )
    hits: dict[str, list[str]] = {}
    for path in sorted(p for d in root.rglob("_delta_log") for p in d.rglob("*")):
        if not path.is_file() or _hadoop_checksum(path):
            continue
        evidence = any(t in path.parts for t in EVIDENCE_TABLES)
        text = path.read_text(errors="replace") if path.suffix in (".json", ".crc") else ""
        found: list[str] = []
        if keys and not evidence:
            if text:
                found += [f"user_key {k[:8]}..." for k in keys if k in text]
        for action in _log_actions(path):
            values, parts = _action_values(action)
            if keys and not evidence and not text:
                found += [
                    f"user_key {k[:8]}..." for k in keys if any(k in v for v in values + parts)
                ]
            if raw:
                tokens = {t for v in values for t in _TOKEN.findall(v)}
                found += [label for r, label in raw.items() if r in tokens]
        if found:
            hits[str(path)] = sorted(set(found))
    return hits
