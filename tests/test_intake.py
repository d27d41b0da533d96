"""Forget-request intake against a real Delta ledger."""

import pytest

from pipelines.forget import submit_user_requests
from recunlearn.data.pseudonym import user_key
from recunlearn.storage.delta import write_delta
from recunlearn.storage.ledger import ForgetLedger

pytestmark = pytest.mark.spark
SECRET = b"intake-test-secret-0123"


@pytest.fixture()
def seeded(spark, layout):
    rows = [(user_key(SECRET, str(u)), i, "train", 0) for u in (1, 2, 3) for i in range(3)]
    df = spark.createDataFrame(rows, "user_key string, item_idx int, split string, shard_id int")
    write_delta(df, layout.interactions, partition_by=["shard_id"], stats_columns=["item_idx"])
    return layout


def test_duplicates_are_idempotent_and_bad_input_is_recorded(spark, seeded):
    out = submit_user_requests(
        spark, layout=seeded, secret=SECRET, raw_ids=["1", "2", "1", "999", "", "a b"]
    )
    assert [o["outcome"] for o in out] == [
        "accepted",
        "accepted",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
    ]
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
    write_delta(
        spark.createDataFrame(rows, "user_key string, item_idx int, split string, shard_id int"),
        seeded.interactions,
        mode="append",
        partition_by=["shard_id"],
        stats_columns=["item_idx"],
    )
    again = submit_user_requests(spark, layout=seeded, secret=SECRET, raw_ids=["late", "never"])
    assert [o["outcome"] for o in again] == ["accepted", "duplicate"]
    ledger = ForgetLedger(spark, seeded.ledger).rows()
    assert len(ledger) == len({r["request_id"] for r in ledger}) == 2
    by_key = {r["user_key"]: r for r in ledger}
    assert by_key[user_key(SECRET, "late")]["status"] == "received"
    assert by_key[user_key(SECRET, "late")]["reason"] is None
    assert by_key[user_key(SECRET, "never")]["status"] == "rejected"


# Run the CLI in a fresh interpreter in which pyspark, py4j and ray cannot be imported: a
# command that tried to start a JVM (or Ray) would fail there.
_NO_ENGINE = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pyspark', 'py4j', 'ray'):
            raise ImportError('engine import blocked in this test: ' + name)
sys.meta_path.insert(0, _Blocked())
from jobs.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(layout, *args):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {
        **os.environ,
        "RECUNLEARN_PSEUDONYM_KEY": SECRET.decode(),
        "RECUNLEARN_LOG_FORMAT": "json",
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _NO_ENGINE,
            *args,
            "--config",
            str(ROOT / "conf" / "test.yaml"),
            "--set",
            f"data_dir={layout.root}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )


def test_forget_status_and_audit_from_the_cli_start_no_engine(spark, seeded):
    """The commands an operator runs by hand read and write the tables through delta-rs: with
    pyspark, py4j and ray unimportable they still work, and the intake's existence check reads
    the shard partition the shard map names (user 2 is in shard 0 only)."""
    import json

    smap = [(user_key(SECRET, "2"), 0)]
    write_delta(
        spark.createDataFrame(smap, "user_key string, shard_id int"),
        seeded.shard_map,
        stats_columns=["shard_id"],
    )
    out = _cli(seeded, "forget", "--user", "1", "--user", "2", "--user", "nobody")
    assert out.returncode == 2, out.stderr[-2000:]  # one rejection
    outcomes = [json.loads(line) for line in out.stdout.splitlines()]
    assert [o["outcome"] for o in outcomes] == ["accepted", "accepted", "rejected"]
    assert "unknown user" in outcomes[2]["reason"]
    rows = ForgetLedger(None, seeded.ledger).rows()
    assert sorted(r["status"] for r in rows) == ["received", "received", "rejected"]
    assert {r["user_key"] for r in rows if r["status"] == "received"} == {
        user_key(SECRET, "1"),
        user_key(SECRET, "2"),
    }
    status = _cli(seeded, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["requests"] == {"received": 2, "rejected": 1}
    one = _cli(seeded, "status", "--request", outcomes[0]["request_id"][:10])
    assert one.returncode == 0 and "now received" in one.stdout
    audit = _cli(seeded, "audit", "--request", outcomes[0]["request_id"][:10])
    assert audit.returncode == 0 and "no retrained requests" in audit.stdout, audit.stderr[-2000:]
    assert _cli(seeded, "audit", "--request", "zzzz").returncode == 2


def test_bench_intake_files_each_sampled_user_through_the_cli(spark, cfg, tmp_path, monkeypatch):
    """The benchmark's path: ingest and partition once, then real `recunlearn forget`
    processes, one per sampled user, every one accepted and on the ledger."""
    from conftest import ROOT, write_ml100k

    from pipelines.bench import intake
    from recunlearn.storage.layout import Layout

    write_ml100k(tmp_path / "raw", n_users=30)
    state = tmp_path / "state"
    cfg = cfg.model_copy(
        update={
            "data_dir": str(state),
            "dataset": cfg.dataset.model_copy(update={"path": str(tmp_path / "raw")}),
        }
    )
    users = intake.prepare(spark, cfg, Layout(state), n_users=3)
    assert len(set(users)) == 3
    result = intake.run(
        cfg,
        users=users,
        prepare_s=1.0,
        config=str(ROOT / "conf" / "test.yaml"),
        overrides=[f"dataset.path={tmp_path / 'raw'}"],
        state=state,
        n_status=1,
    )
    assert result["forget_exit_codes"] == {"0": 3}
    assert result["forget_seconds"]["n"] == 3 and result["forget_seconds"]["p50"] > 0
    rows = ForgetLedger(None, Layout(state).ledger).rows()
    assert sorted(r["status"] for r in rows) == ["received"] * 3
    assert "| recunlearn forget --user ID | 3 |" in intake.markdown(result)


def test_status_reports_ages_against_the_deadline_and_overdue_exits_non_zero(spark, seeded):
    """A request received 40 days ago is past the 30-day deadline: `status --overdue` names it
    and exits 4 (a fresh one and a rejected one are not listed); with a 60-day deadline, 0."""
    import json
    from datetime import timedelta

    from recunlearn.storage.layout import now_utc

    old = now_utc() - timedelta(days=40)
    ForgetLedger(None, seeded.ledger).append(
        [
            {
                "request_id": "old-request-000",
                "target_type": "user",
                "user_key": user_key(SECRET, "1"),
                "status": "received",
                "received_at": old,
                "updated_at": old,
                "job_id": "intake-old",
            },
            {
                "request_id": "old-rejected-00",
                "target_type": "user",
                "user_key": "x",
                "status": "rejected",
                "reason": "unknown user",
                "received_at": old,
                "updated_at": old,
                "job_id": "intake-old",
            },
        ]
    )
    assert _cli(seeded, "forget", "--user", "2").returncode == 0
    late = _cli(seeded, "status", "--overdue")
    assert late.returncode == 4, late.stderr[-2000:]
    assert "1 request(s) past the 30-day deadline" in late.stdout and "old-request-" in late.stdout
    assert "old-rejected" not in late.stdout
    report = json.loads(_cli(seeded, "status", "--json").stdout)
    assert report["overdue"] == ["old-request-000"] and report["open"] == 2
    assert 39.9 < report["oldest_open_age_days"] < 40.1
    relaxed = _cli(seeded, "status", "--overdue", "--set", "unlearn.request_deadline_days=60")
    assert (
        relaxed.returncode == 0 and "no request past the 60-day deadline (2 open)" in relaxed.stdout
    )
