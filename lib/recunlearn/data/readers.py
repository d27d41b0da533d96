"""Readers for raw interaction logs, as Spark DataFrames with one canonical schema:
``raw_user string, item_id string, rating double, ts long``.

Formats: MovieLens' line files, Amazon reviews (JSON lines, 2014/2018 or 2023 field names;
the ratings-only CSV), LFM-2B's listening events and counts, and generic CSV/Parquet logs by a
column mapping; plain, ``.gz`` or ``.bz2``.

Malformed rows (a line that is not a record, wrong field count, empty ids, non-numeric rating
or timestamp; values are converted with ``try_cast`` semantics) either stop the read with a
``DataError`` that counts them by reason, or, with ``quarantine=True``, come back beside the
good rows as ``reason, row`` (the raw row as text) for the ingest job to record by
fingerprint. Neither way is a row (which holds a raw user id) logged or silently dropped.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, overload

from recunlearn.errors import DataError, RecUnlearnError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from recunlearn.config import DatasetConfig

CANONICAL = ["raw_user", "item_id", "rating", "ts"]
_LINE_FORMATS = {
    # name: (file inside the folder (None: every file of the folder), field separator (regex),
    #        header lines, field order)
    "ml-100k": ("u.data", "\t", 0, ["raw_user", "item_id", "rating", "ts"]),
    "ml-1m": ("ratings.dat", "::", 0, ["raw_user", "item_id", "rating", "ts"]),
    "ml-1m-implicit": ("interactions.csv", ",", 1, ["raw_user", "item_id"]),
    # Amazon reviews' ratings-only dumps: headerless item,user,rating,timestamp, one file a category
    "amazon-ratings": (None, ",", 0, ["item_id", "raw_user", "rating", "ts"]),
}
_LOG_PRESETS = {
    # name: (file inside the folder, separator, column mapping, timestamp format)
    # LFM-2B: tab-separated with a header line, usually .bz2; events carry a datetime
    "lfm2b-events": (
        "listening-events.tsv",
        "\t",
        {"user": "user_id", "item": "track_id", "timestamp": "timestamp"},
        "yyyy-MM-dd HH:mm:ss",
    ),
    "lfm2b-counts": (
        "listening-counts.tsv",
        "\t",
        {"user": "user_id", "item": "track_id", "weight": "count"},
        None,
    ),
}
# Amazon reviews as JSON lines: 2014/2018 names (reviewerID, asin, overall, unixReviewTime in
# seconds) or 2023 names (user_id, parent_asin/asin, rating, timestamp in milliseconds), per row.
# Every field is read as text, so a value of the wrong type is a malformed row, not a failed read.
AMAZON_JSON_SCHEMA = (
    "reviewerID string, asin string, overall string, unixReviewTime string, user_id string, "
    "parent_asin string, rating string, timestamp string, _corrupt_record string"
)
REASONS = (
    "malformed record",
    "wrong field count",
    "empty user id",
    "empty item id",
    "non-numeric rating",
    "non-numeric timestamp",
)


@overload
def read_interactions(
    spark: SparkSession, cfg: DatasetConfig, path: Path, *, quarantine: Literal[False] = False
) -> DataFrame: ...


@overload
def read_interactions(
    spark: SparkSession, cfg: DatasetConfig, path: Path, *, quarantine: Literal[True]
) -> tuple[DataFrame, DataFrame]: ...


def read_interactions(
    spark: SparkSession, cfg: DatasetConfig, path: Path, *, quarantine: bool = False
) -> DataFrame | tuple[DataFrame, DataFrame]:
    """Read the raw log at ``path`` (a file or a data set folder) in ``cfg.format``. With
    ``quarantine``, return (good rows, malformed rows as ``reason, row``) instead of failing."""
    if cfg.format in _LINE_FORMATS:
        return _read_delimited(spark, cfg.format, path, quarantine=quarantine)
    if cfg.format == "amazon-json":
        return read_amazon_json(spark, _locate(path, None, cfg.format), quarantine=quarantine)
    if cfg.format in _LOG_PRESETS:
        name, sep, columns, ts_format = _LOG_PRESETS[cfg.format]
        return read_log(
            spark,
            _locate(path, name, cfg.format),
            columns=columns,
            separator=sep,
            timestamp_format=ts_format,
            quarantine=quarantine,
        )
    return read_log(
        spark,
        path,
        columns=cfg.columns,
        separator=cfg.separator,
        timestamp_format=cfg.timestamp_format,
        quarantine=quarantine,
    )


def _locate(path: Path, name: str | None, fmt: str) -> Path:
    """What to read: ``path`` itself, or in a folder the format's file, as it is or compressed
    (``name`` None: the whole folder)."""
    target = path
    if path.is_dir() and name:
        target = next(
            (c for c in (path / name, path / f"{name}.gz", path / f"{name}.bz2") if c.exists()),
            path / name,
        )
    if not target.exists():
        raise DataError(f"{fmt} file {target} does not exist")
    return target


def _read_delimited(
    spark: SparkSession, fmt: str, path: Path, *, quarantine: bool = False
) -> DataFrame | tuple[DataFrame, DataFrame]:
    from pyspark.sql import functions as F

    name, sep, header, fields = _LINE_FORMATS[fmt]
    target = _locate(path, name, fmt)
    with engine_errors(str(target), "text"):
        lines = spark.read.text(str(target))
    if header:
        # Spark's text reader has no header option: drop the first line by its value.
        first = lines.first()
        lines = lines.where(F.col("value") != (first["value"] if first else ""))
    df = lines.where(F.trim("value") != "").select(
        F.split(F.col("value"), sep).alias("p"), F.col("value")
    )
    # get() is null past the end of the array (p[i] raises in ANSI mode).
    at = {f: i for i, f in enumerate(fields)}
    cols = {f: F.trim(F.get(F.col("p"), i)) for f, i in at.items()}
    out = df.select(
        cols["raw_user"].alias("raw_user"),
        cols["item_id"].alias("item_id"),
        (cols["rating"].try_cast("double") if "rating" in at else F.lit(1.0)).alias("rating"),
        (cols["ts"].try_cast("bigint") if "ts" in at else F.lit(0).cast("bigint")).alias("ts"),
        F.size("p").alias("_n"),
        F.col("value").alias("_row"),
    )
    return _separate(
        out, _reason(n_fields=len(fields)), source=target, fmt=fmt, quarantine=quarantine
    )


def read_amazon_json(
    spark: SparkSession, path: Path, *, quarantine: bool = False
) -> DataFrame | tuple[DataFrame, DataFrame]:
    """Amazon reviews as JSON lines (``.gz``/``.bz2`` read directly), 2014/2018 or 2023 field
    names (see ``AMAZON_JSON_SCHEMA``): the item is ``parent_asin`` where given, else ``asin``;
    2023 timestamps are milliseconds. A line that is not a JSON object is a malformed record."""
    from pyspark.sql import functions as F

    with engine_errors(str(path), "JSON lines"):
        df = (
            spark.read.schema(AMAZON_JSON_SCHEMA)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", "_corrupt_record")
            .json(str(path))
        )
    rating_src = F.coalesce(F.col("rating"), F.col("overall"))
    fields = [c for c in df.columns if c != "_corrupt_record"]
    out = df.select(
        F.trim(F.coalesce(F.col("user_id"), F.col("reviewerID"))).alias("raw_user"),
        F.trim(F.coalesce(F.col("parent_asin"), F.col("asin"))).alias("item_id"),
        F.when(rating_src.isNull(), F.lit(1.0))
        .otherwise(rating_src.try_cast("double"))
        .alias("rating"),
        F.when(
            F.col("timestamp").isNotNull(), F.floor(F.col("timestamp").try_cast("double") / 1000)
        )
        .when(F.col("unixReviewTime").isNotNull(), F.col("unixReviewTime").try_cast("bigint"))
        .otherwise(F.lit(0))
        .cast("bigint")
        .alias("ts"),
        F.col("_corrupt_record"),
        # the record as text, for the quarantine's fingerprint (never stored as such)
        F.coalesce(F.col("_corrupt_record"), F.to_json(F.struct(*fields))).alias("_row"),
    )
    return _separate(
        out,
        _reason(corrupt=F.col("_corrupt_record")),
        source=path,
        fmt="amazon-json",
        quarantine=quarantine,
    )


def read_log(
    spark: SparkSession,
    path: Path,
    *,
    columns: dict[str, str],
    separator: str = ",",
    timestamp_format: str | None = None,
    quarantine: bool = False,
) -> DataFrame | tuple[DataFrame, DataFrame]:
    """A generic CSV (with a header; ``.gz``/``.bz2`` read directly) or Parquet log;
    ``columns`` maps user, item and optional rating/weight and timestamp to the file's column
    names. A text timestamp is epoch seconds, or, with ``timestamp_format`` (Spark's datetime
    pattern, e.g. ``yyyy-MM-dd HH:mm:ss``, read as UTC), a date-time in that format.

    Values are converted with ``try_cast`` semantics: a value that does not convert is a
    malformed row (quarantined or counted by reason), never an engine error; an empty value of
    an optional column takes its default (rating 1, timestamp 0). A column whose type cannot
    hold its kind of value at all (a struct as a rating, say) is a ``DataError`` naming the
    column and its type."""
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
            raise DataError(
                f"log {path}: column {col!r} ({role}) has type {types[col]}; a {role} "
                f"column must be one of {sorted(_SOURCE_TYPES[role])}"
            )

    def optional(name: str | None, default: Any, convert: Any) -> Any:
        if not name:
            return default
        return F.when(F.col(name).isNull(), default).otherwise(convert(F.col(name), types[name]))

    out = df.select(
        F.trim(F.col(columns["user"]).try_cast("string")).alias("raw_user"),
        F.trim(F.col(columns["item"]).try_cast("string")).alias("item_id"),
        optional(rating_src, F.lit(1.0), lambda c, t: c.try_cast("double")).alias("rating"),
        optional(
            columns.get("timestamp"),
            F.lit(0).cast("bigint"),
            lambda c, t: _to_seconds(c, t, timestamp_format),
        ).alias("ts"),
        # the row as text, for the quarantine's fingerprint (never stored as such)
        F.concat_ws(
            separator, *[F.coalesce(F.col(c).try_cast("string"), F.lit("")) for c in df.columns]
        ).alias("_row"),
    )
    return _separate(out, _reason(), source=path, fmt="log", quarantine=quarantine)


_NUMBERS = {"byte", "short", "integer", "long", "float", "double", "decimal"}
# what a source column of each role may be (Spark type names); anything else is a DataError
_SOURCE_TYPES = {
    "user": _NUMBERS | {"string", "binary"},
    "item": _NUMBERS | {"string", "binary"},
    "rating": _NUMBERS | {"string", "boolean"},
    "timestamp": _NUMBERS | {"string", "timestamp", "timestamp_ntz", "date"},
}


def _to_seconds(col: Any, type_name: str, text_format: str | None = None) -> Any:
    """Epoch seconds from a number, a numeric string (or, given ``text_format``, a date-time
    string in it), a timestamp or a date (null if none of them)."""
    from pyspark.sql import functions as F

    if type_name == "string" and text_format:
        return F.coalesce(
            col.try_cast("bigint"), F.unix_seconds(F.try_to_timestamp(col, F.lit(text_format)))
        )
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
        raise DataError(
            f"{what} could not be read as {kind} ({spark_error_class(exc)}); nothing was ingested"
        ) from None


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


def _reason(*, n_fields: int | None = None, corrupt: Any = None) -> Any:
    """Why a row is malformed (the first of ``REASONS`` that applies), null for a good row."""
    from pyspark.sql import functions as F

    reason = (
        F.when(F.col("raw_user").isNull() | (F.col("raw_user") == ""), "empty user id")
        .when(F.col("item_id").isNull() | (F.col("item_id") == ""), "empty item id")
        .when(F.col("rating").isNull() | F.isnan("rating"), "non-numeric rating")
        .when(F.col("ts").isNull(), "non-numeric timestamp")
    )
    if n_fields is not None:
        reason = F.when(F.col("_n") != n_fields, "wrong field count").otherwise(reason)
    if corrupt is not None:
        reason = F.when(corrupt.isNotNull(), "malformed record").otherwise(reason)
    return reason


def _separate(
    out: DataFrame, reason: Any, *, source: Path, fmt: str, quarantine: bool
) -> DataFrame | tuple[DataFrame, DataFrame]:
    """The canonical good rows of ``out`` (``raw_user, item_id, rating, ts`` and the row's
    text ``_row``) and, with ``quarantine``, the others as ``reason, row``; without it, a
    ``DataError`` when there is any other."""
    from pyspark.sql import functions as F

    tagged = out.withColumn("_reason", reason)
    good = tagged.where(F.col("_reason").isNull()).select(*CANONICAL)
    bad = tagged.where(F.col("_reason").isNotNull())
    if quarantine:
        return good, bad.select(F.col("_reason").alias("reason"), F.col("_row").alias("row"))
    _fail_on_bad(bad, source, fmt)
    return good


def _fail_on_bad(bad: DataFrame, path: Path, fmt: str) -> None:
    """Raise when ``bad`` (rows tagged with ``_reason``) has rows: their count and reasons,
    never their contents (the rows carry raw user ids)."""
    counts = {r["_reason"]: r["count"] for r in bad.groupBy("_reason").count().collect()}
    n_bad = sum(counts.values())
    if n_bad == 0:
        return
    detail = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    raise DataError(
        f"{path}: {n_bad} malformed {fmt} row(s) ({detail}); nothing was ingested. "
        "Fix or drop them and re-run."
    )
