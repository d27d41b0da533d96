"""Seeded fuzz of the two doors bad input comes through (issue 7): the log readers with the
ingest quarantine, and forget-request intake. Properties, not examples: nothing is lost (every
non-blank line is ingested or quarantined, every submitted id gets exactly one outcome),
every rejection has a reason, what is clearly good gets in and what is clearly bad does not,
and no raw id is stored."""

from __future__ import annotations

import numpy as np
import pytest

from recunlearn.config import DatasetConfig
from recunlearn.pseudonym import user_key
from recunlearn.readers import REASONS, read_interactions
from recunlearn.tables import ForgetLedger, write_delta
from pipelines.forget import submit_user_requests

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
        kind = rng.choice(["good", "rating", "ts", "fields", "empty_user", "empty_item", "truncated",
                           "noise_item", "blank"], p=[.4, .1, .1, .1, .05, .05, .1, .05, .05])
        if kind == "rating":
            rating = rng.choice(BAD_RATING)
        elif kind == "ts":
            ts = rng.choice(BAD_TS)
        fields = [user, item, rating, ts]
        if kind == "fields":
            fields = fields[: int(rng.integers(1, 4))] if rng.random() < .5 else fields + ["extra"]
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
    write_delta(spark.createDataFrame(rows, "user_key string, item_idx int, split string, shard_id int"),
                layout.interactions, partition_by=["shard_id"], stats_columns=["item_idx"])
    rng = np.random.default_rng(3)
    pool = ([f"known{u}" for u in range(5)] + [f"stranger{u}" for u in range(5)]
            + ["", "   ", "a b", "x" * 300, "é", "😀", "id;drop", "\t", "ok-id_1.x@y:z+w"] + NOISE)
    ids = [str(rng.choice(pool)) for _ in range(120)]
    out = submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=ids)
    assert [o["position"] for o in out] == list(range(len(ids)))
    assert {o["outcome"] for o in out} <= {"accepted", "duplicate", "rejected"}
    assert all(o.get("reason") for o in out if o["outcome"] == "rejected")
    ledger = ForgetLedger(spark, layout.ledger).rows()
    assert len({r["request_id"] for r in ledger}) == len(ledger) == len({o["request_id"] for o in out})
    assert all(r["reason"] for r in ledger if r["status"] == "rejected")
    accepted = {r["user_key"] for r in ledger if r["status"] == "received"}
    assert accepted == {user_key(SECRET, i) for i in set(ids) if i.startswith("known")}
    text = repr(ledger) + repr(out)
    assert not any(i in text for i in set(ids) if len(i.strip()) > 3 and i.isascii() and i.isalnum())
    # the same submissions again: every one a duplicate (or the same rejection), nothing new
    again = submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=ids)
    assert all(o["outcome"] in ("duplicate", "rejected") for o in again)
    assert len(ForgetLedger(spark, layout.ledger).rows()) == len(ledger)
