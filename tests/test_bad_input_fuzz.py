"""Seeded fuzz of the two doors bad input comes through (issue 7): the log readers with the
ingest quarantine (every reader path: the line formats, generic CSV and Parquet logs,
compressed inputs), and forget-request intake. Properties, not examples: nothing is lost (every
non-blank line is ingested or quarantined, every submitted id gets exactly one outcome),
every rejection has a reason, what is clearly good gets in and what is clearly bad does not,
and no raw id is stored."""

from __future__ import annotations

import bz2
import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipelines.forget import submit_user_requests
from recunlearn.config import DatasetConfig
from recunlearn.data.pseudonym import user_key
from recunlearn.data.readers import REASONS, read_interactions
from recunlearn.errors import DataError
from recunlearn.storage.delta import write_delta
from recunlearn.storage.ledger import ForgetLedger

pytestmark = pytest.mark.spark
SECRET = b"fuzz-secret-0123456789"

GOOD_RATING, BAD_RATING = ["1", "2.5", "4", " 5 "], ["five", "", "3,5", "--1", "NaN", "x2"]
GOOD_TS, BAD_TS = ["881250949", "0", "42"], ["", "12:00", "ts", "9x9"]
NOISE = ["é", "\u00a0", "'; DROP TABLE t; --", "😀", "\\N", "null", "\x0b"]


def _lines(rng: np.random.Generator, n: int) -> tuple[list[str], dict[str, bool]]:
    """Tab-separated ml-100k lines; each with its own user id, so each can be followed.
    Returns the lines and, for the lines whose fate is certain, whether they are good."""
    lines, fate = [], {}
    for k in range(n):
        user, item = f"u{k:04d}", str(int(rng.integers(1, 500)))
        rating, ts = rng.choice(GOOD_RATING), rng.choice(GOOD_TS)
        kind = rng.choice(
            [
                "good",
                "rating",
                "ts",
                "fields",
                "empty_user",
                "empty_item",
                "truncated",
                "noise_item",
                "blank",
            ],
            p=[0.4, 0.1, 0.1, 0.1, 0.05, 0.05, 0.1, 0.05, 0.05],
        )
        if kind == "rating":
            rating = rng.choice(BAD_RATING)
        elif kind == "ts":
            ts = rng.choice(BAD_TS)
        fields = [user, item, rating, ts]
        if kind == "fields":
            fields = fields[: int(rng.integers(1, 4))] if rng.random() < 0.5 else fields + ["extra"]
        elif kind == "empty_user":
            fields[0] = " "
        elif kind == "empty_item":
            fields[1] = ""
        elif kind == "noise_item":
            fields[1] = str(rng.choice(NOISE)) + item
        line = "\t".join(fields)
        if kind == "truncated":  # cut anywhere after the user id: may or may not parse
            line = line[: int(rng.integers(len(user) + 1, len(line) + 1))]
        elif kind == "blank":
            line = " " * int(rng.integers(0, 3))
        else:
            fate[user] = kind in ("good", "noise_item") and item.strip() != ""
        lines.append(line)
    return lines, fate


@pytest.mark.parametrize("seed", [1, 2])
def test_reader_keeps_or_quarantines_every_line(spark, tmp_path, seed):
    lines, fate = _lines(np.random.default_rng(seed), 400)
    (tmp_path / "u.data").write_text("\n".join(lines) + "\n", encoding="utf-8")
    good, bad = read_interactions(spark, DatasetConfig(format="ml-100k"), tmp_path, quarantine=True)
    good, bad = good.collect(), bad.collect()
    assert len(good) + len(bad) == sum(bool(x.strip()) for x in lines)  # nothing lost
    assert {r["reason"] for r in bad} <= set(REASONS)
    for r in good:
        assert r.raw_user and r.item_id and r.rating == r.rating and r.ts is not None
    ingested = {r.raw_user for r in good}
    for user, ok in fate.items():
        assert (user in ingested) == ok, (user, ok)
    # strict mode refuses the same file and says how many rows, by reason
    if bad:
        from recunlearn.errors import DataError

        with pytest.raises(DataError, match=f"{len(bad)} malformed"):
            read_interactions(spark, DatasetConfig(format="ml-100k"), tmp_path)


# Rows whose fate is certain, with the reason each bad one must be quarantined for.
KIND_REASON = {
    "good": None,
    "rating": "non-numeric rating",
    "ts": "non-numeric timestamp",
    "empty_user": "empty user id",
    "empty_item": "empty item id",
    "fields": "wrong field count",
}
# what bad values look like in a generic log: never the separator (it would shift the fields)
LOG_BAD_RATING, LOG_BAD_TS = (
    ["five", "--1", "NaN", "x2", "1e"],
    ["12:00", "ts", "9x9", "880000011;DROP TABLE interactions", "1.5.5"],
)


def _rows(rng: np.random.Generator, n: int, kinds: list[str]) -> list[tuple[str, list[str]]]:
    """(kind, [user, item, rating, ts]) with the kind's defect; a user id per row."""
    out = []
    for k in range(n):
        kind = str(rng.choice(kinds))
        f = [
            f"u{k:04d}",
            str(int(rng.integers(1, 500))),
            str(rng.choice(GOOD_RATING)).strip(),
            str(rng.choice(GOOD_TS)),
        ]
        if kind == "rating":
            f[2] = str(rng.choice(LOG_BAD_RATING))
        elif kind == "ts":
            f[3] = str(rng.choice(LOG_BAD_TS))
        elif kind == "empty_user":
            f[0] = " "
        elif kind == "empty_item":
            f[1] = " "
        out.append((kind, f))
    return out


def _write(path: Path, text: str, compression: str | None) -> Path:
    data = text.encode("utf-8")
    if compression == "gz":
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    elif compression == "bz2":
        path = path.with_name(path.name + ".bz2")
        path.write_bytes(bz2.compress(data))
    else:
        path.write_bytes(data)
    return path


# format: (file name, separator, header line, the fields of a line (indices into [user, item,
# rating, ts]; None: a constant album id), the kinds of defect that format can carry)
ALL, NO_FIELDS = list(KIND_REASON), ["good", "rating", "ts", "empty_user", "empty_item"]
LINE_CASES = {
    "ml-100k": ("u.data", "\t", None, (0, 1, 2, 3), ALL),
    "ml-1m": ("ratings.dat", "::", None, (0, 1, 2, 3), ALL),
    "ml-1m-implicit": (
        "interactions.csv",
        ",",
        "user_id,movie_id",
        (0, 1),
        ["good", "empty_user", "empty_item", "fields"],
    ),
    "amazon-ratings": ("ratings_Digital_Music.csv", ",", None, (1, 0, 2, 3), ALL),
    "lfm2b-events": (
        "listening-events.tsv",
        "\t",
        "user_id\ttrack_id\talbum_id\ttimestamp",
        (0, 1, None, 3),
        ["good", "ts", "empty_user", "empty_item"],
    ),
    "lfm2b-counts": (
        "listening-counts.tsv",
        "\t",
        "user_id\ttrack_id\tcount",
        (0, 1, 2),
        ["good", "rating", "empty_user", "empty_item"],
    ),
    "log": ("plays.csv", ",", "uid,iid,stars,when", (0, 1, 2, 3), NO_FIELDS),
}


@pytest.mark.parametrize(
    "fmt,compression",
    [
        ("ml-100k", None),
        ("ml-100k", "gz"),
        ("ml-1m", None),
        ("ml-1m", "bz2"),
        ("ml-1m-implicit", None),
        ("ml-1m-implicit", "gz"),
        ("amazon-ratings", "gz"),
        ("lfm2b-events", "bz2"),
        ("lfm2b-counts", None),
        ("log", None),
        ("log", "bz2"),
    ],
)
def test_every_line_reader_quarantines_each_malformed_row_with_its_reason(
    spark, tmp_path, fmt, compression
):
    name, sep, header, order, kinds = LINE_CASES[fmt]
    rows = _rows(np.random.default_rng(len(fmt) + 7 * bool(compression)), 240, kinds)
    lines = [header] if header else []
    for kind, raw in rows:
        f = ["7" if i is None else raw[i] for i in order]
        if kind == "fields":  # one field short or one too many
            f = f[:-1] if int(raw[1]) % 2 else f + ["extra"]
        lines.append(sep.join(f))
    target = _write(tmp_path / name, "\n".join(lines) + "\n", compression)
    cfg = (
        DatasetConfig(
            format="log",
            columns={"user": "uid", "item": "iid", "rating": "stars", "timestamp": "when"},
        )
        if fmt == "log"
        else DatasetConfig(format=fmt)
    )
    # a folder finds the format's file, compressed or not; the generic log is named directly
    good, bad = read_interactions(spark, cfg, target if fmt == "log" else tmp_path, quarantine=True)
    good, bad = good.collect(), bad.collect()
    expected = Counter(KIND_REASON[k] for k, _ in rows if KIND_REASON[k])
    assert Counter(r["reason"] for r in bad) == expected  # every malformed row, by its reason
    assert sorted(r.raw_user for r in good) == sorted(f[0] for k, f in rows if k == "good")
    assert all(r.rating == r.rating and r.ts is not None for r in good)
    with pytest.raises(DataError, match=f"{sum(expected.values())} malformed"):
        read_interactions(spark, cfg, target if fmt == "log" else tmp_path)


def test_amazon_json_quarantines_each_malformed_record_with_its_reason(spark, tmp_path):
    """Amazon reviews as JSON lines, 2014/2018 and 2023 field names mixed, gzipped: lines that
    are not JSON, values of the wrong kind and empty ids are quarantined by reason."""
    import json

    rng = np.random.default_rng(21)
    rows = _rows(rng, 240, ["good", "rating", "ts", "empty_user", "empty_item", "malformed"])
    lines = []
    for n, (kind, (user, item, rating, ts)) in enumerate(rows):
        if kind == "malformed":
            lines.append(
                str(rng.choice(['{"reviewerID": "x", "asin"', "not json at all", '["a", "b"]']))
            )
            continue
        if n % 2:  # 2014/2018
            rec = {
                "reviewerID": user,
                "asin": item,
                "overall": float(rating) if kind != "rating" else rating,
                "unixReviewTime": int(ts) if kind != "ts" else ts,
                "reviewText": "fine",
                "verified": True,
            }
        else:  # 2023: timestamp in milliseconds, parent_asin beside asin
            rec = {
                "user_id": user,
                "parent_asin": item,
                "asin": "B0CHILD",
                "rating": rating if kind == "rating" else float(rating),
                "timestamp": int(ts) * 1000 if kind != "ts" else ts,
                "helpful_vote": 0,
            }
        lines.append(json.dumps(rec))
    target = _write(tmp_path / "Digital_Music.jsonl", "\n".join(lines) + "\n", "gz")
    good, bad = read_interactions(
        spark, DatasetConfig(format="amazon-json"), target, quarantine=True
    )
    expected = Counter(
        {**KIND_REASON, "malformed": "malformed record"}[k] for k, _ in rows if k != "good"
    )
    assert Counter(r["reason"] for r in bad.collect()) == expected
    got = sorted((r.raw_user, r.item_id, r.ts) for r in good.collect())
    assert got == sorted((f[0], f[1], int(f[3])) for k, f in rows if k == "good")  # 2023 ms -> s


def test_parquet_log_with_wrong_column_types_quarantines_or_names_the_column(spark, tmp_path):
    """Ratings and timestamps stored as text, user ids as integers: each value that does not
    convert is a quarantined row; a column that cannot hold its kind at all is a DataError
    naming it; a file that is not Parquet is a DataError, never Spark's own exception."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(np.random.default_rng(11), 200, ["good", "rating", "ts", "empty_item"])
    table = pa.table(
        {
            "uid": pa.array([k for k in range(len(rows))], pa.int64()),
            "iid": [f[1] for _, f in rows],
            "stars": [f[2] for _, f in rows],
            "when": [f[3] for _, f in rows],
        }
    )
    folder = tmp_path / "log"
    folder.mkdir()
    pq.write_table(table, folder / "part-0.parquet")
    cfg = DatasetConfig(
        format="log", columns={"user": "uid", "item": "iid", "rating": "stars", "timestamp": "when"}
    )
    good, bad = read_interactions(spark, cfg, folder, quarantine=True)
    assert Counter(r["reason"] for r in bad.collect()) == Counter(
        KIND_REASON[k] for k, _ in rows if k != "good"
    )
    assert sorted(int(r.raw_user) for r in good.collect()) == [
        i for i, (k, _) in enumerate(rows) if k == "good"
    ]

    nested = tmp_path / "nested"
    nested.mkdir()
    pq.write_table(
        pa.table({"uid": ["a"], "iid": ["b"], "stars": pa.array([{"x": 1}])}), nested / "p.parquet"
    )
    with pytest.raises(DataError, match=r"column 'stars' \(rating\) has type struct"):
        read_interactions(
            spark,
            DatasetConfig(format="log", columns={"user": "uid", "item": "iid", "rating": "stars"}),
            nested,
        )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "part-0.parquet").write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(DataError, match="could not be read as Parquet"):
        read_interactions(spark, cfg, broken)


def test_ingest_of_a_generic_log_quarantines_a_sql_injection_timestamp(
    spark, cfg, layout, tmp_path
):
    """The row a new user hit: ingest stopped with Spark's CAST_INVALID_INPUT."""
    from pipelines.ingest import ingest

    log_file = tmp_path / "log.csv"
    log_file.write_text(
        "user,item,ts\n1,10,880000001\n1,11,880000011;DROP TABLE interactions\n"
        "2,10,880000002\n2,12,880000003\n"
    )
    cfg = cfg.model_copy(
        update={
            "dataset": DatasetConfig(
                format="log", columns={"user": "user", "item": "item", "timestamp": "ts"}
            )
        }
    )
    stats = ingest(spark, cfg=cfg, layout=layout, raw_path=log_file, secret=SECRET)
    assert stats["quarantined"] == {"non-numeric timestamp": 1}
    assert stats["rows"] == 3


def test_ingest_quarantines_by_fingerprint_without_raw_ids(spark, cfg, layout, tmp_path):
    from pipelines.ingest import ingest

    lines, _ = _lines(np.random.default_rng(7), 200)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "u.data").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET)
    q = spark.read.format("delta").load(layout.quarantine).toPandas()
    assert len(q) == sum(stats["quarantined"].values()) > 0
    assert q.groupby("reason").size().to_dict() == stats["quarantined"]
    assert q["fingerprint"].str.fullmatch(r"[0-9a-f]+").all() and q["fingerprint"].is_unique
    stored = " ".join(q.astype(str).to_numpy().ravel())
    assert not any(f"u{k:04d}" in stored for k in range(200))  # no raw id in the quarantine
    # the good rows are in, the others are not
    n_good = stats["rows"]
    assert n_good > 0 and n_good + len(q) <= sum(bool(x.strip()) for x in lines)


def test_intake_records_one_outcome_per_submission(spark, layout):
    rows = [(user_key(SECRET, f"known{u}"), i, "train", 0) for u in range(5) for i in range(3)]
    write_delta(
        spark.createDataFrame(rows, "user_key string, item_idx int, split string, shard_id int"),
        layout.interactions,
        partition_by=["shard_id"],
        stats_columns=["item_idx"],
    )
    rng = np.random.default_rng(3)
    pool = (
        [f"known{u}" for u in range(5)]
        + [f"stranger{u}" for u in range(5)]
        + ["", "   ", "a b", "x" * 300, "é", "😀", "id;drop", "\t", "ok-id_1.x@y:z+w"]
        + NOISE
    )
    ids = [str(rng.choice(pool)) for _ in range(120)]
    out = submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=ids)
    assert [o["position"] for o in out] == list(range(len(ids)))
    assert {o["outcome"] for o in out} <= {"accepted", "duplicate", "rejected"}
    assert all(o.get("reason") for o in out if o["outcome"] == "rejected")
    ledger = ForgetLedger(spark, layout.ledger).rows()
    assert (
        len({r["request_id"] for r in ledger}) == len(ledger) == len({o["request_id"] for o in out})
    )
    assert all(r["reason"] for r in ledger if r["status"] == "rejected")
    accepted = {r["user_key"] for r in ledger if r["status"] == "received"}
    assert accepted == {user_key(SECRET, i) for i in set(ids) if i.startswith("known")}
    text = repr(ledger) + repr(out)
    assert not any(
        i in text for i in set(ids) if len(i.strip()) > 3 and i.isascii() and i.isalnum()
    )
    # the same submissions again: every one a duplicate (or the same rejection), nothing new
    again = submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=ids)
    assert all(o["outcome"] in ("duplicate", "rejected") for o in again)
    assert len(ForgetLedger(spark, layout.ledger).rows()) == len(ledger)
