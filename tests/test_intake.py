"""Forget-request intake against a real Delta ledger."""

import pytest

from recunlearn.pseudonym import user_key
from recunlearn.tables import ForgetLedger, write_delta
from pipelines.forget import submit_user_requests

pytestmark = pytest.mark.spark
SECRET = b"intake-test-secret-0123"


@pytest.fixture()
def seeded(spark, layout):
    rows = [(user_key(SECRET, str(u)), i, "train", 0) for u in (1, 2, 3) for i in range(3)]
    df = spark.createDataFrame(rows, "user_key string, item_idx int, split string, shard_id int")
    write_delta(df, layout.interactions, partition_by=["shard_id"], stats_columns=["item_idx"])
    return layout


def test_duplicates_are_idempotent_and_bad_input_is_recorded(spark, seeded):
    out = submit_user_requests(spark, layout=seeded, secret=SECRET,
                               raw_ids=["1", "2", "1", "999", "", "a b"])
    assert [o["outcome"] for o in out] == ["accepted", "accepted", "duplicate", "rejected",
                                           "rejected", "rejected"]
    assert "unknown user" in out[3]["reason"]
    assert "malformed" in out[4]["reason"]
    again = submit_user_requests(spark, layout=seeded, secret=SECRET, raw_ids=["2"])
    assert again[0]["outcome"] == "duplicate" and again[0]["status"] == "received"
    rows = ForgetLedger(spark, seeded.ledger).rows()
    by_status = sorted((r["status"], r["reason"] is None) for r in rows)
    # two received requests, and three rejections (unknown, empty, malformed), each with a reason
    assert by_status == [("received", True)] * 2 + [("rejected", False)] * 3
    keys = {r["user_key"] for r in rows}
    assert user_key(SECRET, "1") in keys and "1" not in keys  # keys, never raw ids


def test_outcomes_never_carry_raw_ids(spark, seeded):
    out = submit_user_requests(spark, layout=seeded, secret=SECRET, raw_ids=["3", "unknown-77"])
    flat = repr(out)
    assert "unknown-77" not in flat
    assert out[0]["user_key"] == user_key(SECRET, "3")


def test_rejected_request_reopens_in_place_once_the_user_has_data(spark, seeded):
    """An id rejected as unknown, submitted again after its data arrived, is accepted, and the
    ledger still holds one row for the request (it is reopened, not appended twice); submitted
    again while still unknown, it stays one rejected row."""
    first = submit_user_requests(spark, layout=seeded, secret=SECRET, raw_ids=["late", "never"])
    assert [o["outcome"] for o in first] == ["rejected", "rejected"]
    rows = [(user_key(SECRET, "late"), 7, "train", 0)]
    write_delta(spark.createDataFrame(rows, "user_key string, item_idx int, split string, shard_id int"),
                seeded.interactions, mode="append", partition_by=["shard_id"], stats_columns=["item_idx"])
    again = submit_user_requests(spark, layout=seeded, secret=SECRET, raw_ids=["late", "never"])
    assert [o["outcome"] for o in again] == ["accepted", "duplicate"]
    ledger = ForgetLedger(spark, seeded.ledger).rows()
    assert len(ledger) == len({r["request_id"] for r in ledger}) == 2
    by_key = {r["user_key"]: r for r in ledger}
    assert by_key[user_key(SECRET, "late")]["status"] == "received"
    assert by_key[user_key(SECRET, "late")]["reason"] is None
    assert by_key[user_key(SECRET, "never")]["status"] == "rejected"
