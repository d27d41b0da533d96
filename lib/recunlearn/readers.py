"""Readers for raw interaction logs, as Spark DataFrames with one canonical schema:
``raw_user string, item_id string, rating double, ts long``.

Malformed rows (wrong field count, empty ids, non-numeric rating or timestamp) either stop the
read with a ``DataError`` that counts them by reason, or, with ``quarantine=True``, come back
beside the good rows as ``reason, row`` (the raw row as text) for the ingest job to record
by fingerprint. Neither way is a row (which holds a raw user id) logged or silently dropped.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from recunlearn.config import DatasetConfig
from recunlearn.errors import DataError, RecUnlearnError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

CANONICAL = ["raw_user", "item_id", "rating", "ts"]
_LINE_FORMATS = {
    # name: (file inside the folder, field separator (regex), header lines, field order)
    "ml-100k": ("u.data", "\t", 0, ["raw_user", "item_id", "rating", "ts"]),
    "ml-1m": ("ratings.dat", "::", 0, ["raw_user", "item_id", "rating", "ts"]),
    "ml-1m-implicit": ("interactions.csv", ",", 1, ["raw_user", "item_id"]),
}


def read_interactions(spark: SparkSession, cfg: DatasetConfig, path: Path, *,
                      quarantine: bool = False) -> DataFrame | tuple[DataFrame, DataFrame]:
    """Read the raw log at ``path`` (a file or a data set folder) in ``cfg.format``. With
    ``quarantine``, return (good rows, malformed rows as ``reason, row``) instead of failing."""
    if cfg.format in _LINE_FORMATS:
        return _read_delimited(spark, cfg.format, path, quarantine=quarantine)
    return read_log(spark, path, columns=cfg.columns, separator=cfg.separator, quarantine=quarantine)


def _read_delimited(spark: SparkSession, fmt: str, path: Path, *,
                    quarantine: bool = False) -> DataFrame | tuple[DataFrame, DataFrame]:
    from pyspark.sql import functions as F

    name, sep, header, fields = _LINE_FORMATS[fmt]
    target = path
    if path.is_dir():  # the format's file in the folder, as it is or compressed
        target = next((c for c in (path / name, path / f"{name}.gz", path / f"{name}.bz2") if c.exists()),
                      path / name)
    if not target.exists():
        raise DataError(f"{fmt} file {target} does not exist")
    with engine_errors(str(target), "text"):
        lines = spark.read.text(str(target))
    if header:
        # Spark's text reader has no header option: drop the first line by its value.
        first = lines.first()
        lines = lines.where(F.col("value") != (first["value"] if first else ""))
    parts = F.split(F.col("value"), sep)
    df = lines.select(parts.alias("p"), F.col("value"))
    # get() is null past the end of the array (p[i] raises in ANSI mode).
    cols = {f: F.trim(F.get(F.col("p"), i)) for i, f in enumerate(fields)}
    rating = F.expr("try_cast(trim(get(p, 2)) AS double)") if "rating" in fields else F.lit(1.0)
    ts = F.expr("try_cast(trim(get(p, 3)) AS bigint)") if "ts" in fields else F.lit(0).cast("bigint")
    out = df.select(
        cols["raw_user"].alias("raw_user"), cols["item_id"].alias("item_id"),
        rating.alias("rating"), ts.alias("ts"), F.size("p").alias("_n"), F.col("value"))
    bad = ((F.col("_n") != len(fields)) | F.col("raw_user").isNull() | (F.col("raw_user") == "")
           | F.col("item_id").isNull() | (F.col("item_id") == "") | F.col("rating").isNull()
           | F.isnan("rating") | F.col("ts").isNull())
    nonblank = out.where(F.trim("value") != "")
    if quarantine:
        rejected = nonblank.where(bad).select(_reason(len(fields)).alias("reason"), F.col("value").alias("row"))
        return nonblank.where(~bad).select(*CANONICAL), rejected
    _fail_on_bad(nonblank.where(bad), target, fmt, n_fields=len(fields))
    return nonblank.select(*CANONICAL)


def read_log(spark: SparkSession, path: Path, *, columns: dict[str, str],
             separator: str = ",", quarantine: bool = False) -> DataFrame | tuple[DataFrame, DataFrame]:
    """A generic CSV (with a header; ``.gz``/``.bz2`` read directly) or Parquet log;
    ``columns`` maps user, item and optional rating/weight and timestamp to the file's column
    names.

    Values are converted with ``try_cast`` semantics: a value that does not convert is a
    malformed row (quarantined or counted by reason), never an engine error. A column whose
    type cannot hold its kind of value at all (a struct as a rating, say) is a ``DataError``
    naming the column and its type."""
    from pyspark.sql import functions as F

    missing = [k for k in ("user", "item") if k not in columns]
    if missing:
        raise DataError(f"dataset.columns must map {missing}; got {sorted(columns)}")
    if not path.exists():
        raise DataError(f"log {path} does not exist")
    is_parquet = path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet")))
    with engine_errors(f"log {path}", "Parquet" if is_parquet else "CSV"):
        if is_parquet:
            df = spark.read.parquet(str(path))
        else:
            df = spark.read.option("header", "true").option("sep", separator).csv(str(path))
    absent = sorted(v for v in columns.values() if v not in df.columns)
    if absent:
        raise DataError(f"log {path} lacks column(s) {absent}; it has {df.columns}")
    types = {f.name: f.dataType.typeName() for f in df.schema.fields}
    rating_src = columns.get("rating") or columns.get("weight")
    roles = {"user": columns["user"], "item": columns["item"]}
    if rating_src:
        roles["rating"] = rating_src
    if "timestamp" in columns:
        roles["timestamp"] = columns["timestamp"]
    for role, col in roles.items():
        if types[col] not in _SOURCE_TYPES[role]:
            raise DataError(f"log {path}: column {col!r} ({role}) has type {types[col]}; a {role} "
                            f"column must be one of {sorted(_SOURCE_TYPES[role])}")
    out = df.select(
        F.trim(F.col(columns["user"]).try_cast("string")).alias("raw_user"),
        F.trim(F.col(columns["item"]).try_cast("string")).alias("item_id"),
        (F.col(rating_src).try_cast("double") if rating_src else F.lit(1.0)).alias("rating"),
        (_to_seconds(F.col(columns["timestamp"]), types[columns["timestamp"]]) if "timestamp" in columns
         else F.lit(0).cast("bigint")).alias("ts"),
        *([F.col(rating_src).alias("_r_src")] if rating_src else []),
        *([F.col(columns["timestamp"]).alias("_t_src")] if "timestamp" in columns else []),
        # the row as text, for the quarantine's fingerprint (never stored as such)
        F.concat_ws(separator, *[F.coalesce(F.col(c).try_cast("string"), F.lit("")) for c in df.columns]
                    ).alias("_row"),
    )
    bad = (F.col("raw_user").isNull() | (F.col("raw_user") == "") | F.col("item_id").isNull()
           | (F.col("item_id") == ""))
    if rating_src:
        bad = bad | (F.col("_r_src").isNotNull() & (F.col("rating").isNull() | F.isnan("rating")))
    if "timestamp" in columns:
        bad = bad | (F.col("_t_src").isNotNull() & F.col("ts").isNull())
    if quarantine:
        rejected = out.where(bad).select(_reason(None).alias("reason"), F.col("_row").alias("row"))
        return out.where(~bad).select(*CANONICAL).fillna({"rating": 1.0, "ts": 0}), rejected
    _fail_on_bad(out.where(bad), path, "log")
    return out.select(*CANONICAL).fillna({"rating": 1.0, "ts": 0})


_NUMBERS = {"byte", "short", "integer", "long", "float", "double", "decimal"}
# what a source column of each role may be (Spark type names); anything else is a DataError
_SOURCE_TYPES = {
    "user": _NUMBERS | {"string", "binary"},
    "item": _NUMBERS | {"string", "binary"},
    "rating": _NUMBERS | {"string", "boolean"},
    "timestamp": _NUMBERS | {"string", "timestamp", "timestamp_ntz", "date"},
}


def _to_seconds(col: Any, type_name: str) -> Any:
    """Epoch seconds from a number, a numeric string, a timestamp or a date (null if none)."""
    from pyspark.sql import functions as F

    if type_name in ("timestamp", "timestamp_ntz"):
        return F.unix_seconds(col.try_cast("timestamp"))
    if type_name == "date":
        return F.unix_date(col) * F.lit(86400).cast("bigint")
    if type_name in ("float", "double", "decimal"):
        return col.try_cast("double").try_cast("bigint")
    return col.try_cast("bigint")


@contextmanager
def engine_errors(what: str, kind: str) -> Iterator[None]:
    """Turn Spark's error for an unreadable input (a file that is not ``kind``, a corrupt
    footer, a missing codec) into a ``DataError`` naming the input and Spark's error class,
    never the message's values (which can hold rows and so raw ids)."""
    try:
        yield
    except Exception as exc:  # pyspark's errors and py4j's; ours pass through
        if isinstance(exc, RecUnlearnError):
            raise
        raise DataError(f"{what} could not be read as {kind} ({spark_error_class(exc)}); "
                        "nothing was ingested") from None


def spark_error_class(exc: BaseException) -> str:
    """Spark's error class of ``exc`` (e.g. ``FAILED_READ_FILE.NO_HINT``), else its type name."""
    getter = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    try:
        name = getter() if getter else None
    except Exception:  # a py4j error whose JVM side is gone
        name = None
    if not name:
        m = re.search(r"\[([A-Z][A-Z0-9_.]+)\]", str(exc))
        name = m.group(1) if m else None
    return name or type(exc).__name__


REASONS = ("wrong field count", "empty user id", "empty item id", "non-numeric rating",
           "non-numeric timestamp")


def _reason(n_fields: int | None) -> Any:
    """Why a row is malformed (the first of ``REASONS`` that applies)."""
    from pyspark.sql import functions as F

    reason = (F.when(F.col("raw_user").isNull() | (F.col("raw_user") == ""), "empty user id")
              .when(F.col("item_id").isNull() | (F.col("item_id") == ""), "empty item id")
              .when(F.col("rating").isNull() | F.isnan("rating"), "non-numeric rating")
              .when(F.col("ts").isNull(), "non-numeric timestamp")
              .otherwise("wrong field count"))
    if n_fields is not None:
        reason = F.when(F.col("_n") != n_fields, "wrong field count").otherwise(reason)
    return reason


def _fail_on_bad(bad: DataFrame, path: Path, fmt: str, n_fields: int | None = None) -> None:
    """Raise when ``bad`` has rows: their count and reasons, never their contents (the rows
    carry raw user ids)."""
    n_bad = bad.count()
    if n_bad == 0:
        return
    counts = {r["reason"]: r["count"] for r in bad.select(_reason(n_fields).alias("reason"))
              .groupBy("reason").count().collect()}
    detail = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    raise DataError(f"{path}: {n_bad} malformed {fmt} row(s) ({detail}); nothing was ingested. "
                    "Fix or drop them and re-run.")
