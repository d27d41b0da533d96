"""The tables' job lock on real Delta: one holder at a time, a clear error for the second job
(before it changes anything), re-entrancy within a job, and takeover of a killed holder's
lease on the same host or of an expired one."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from recunlearn.errors import JobConflictError
from recunlearn.storage.joblock import JobLock, holding, lock_path
from recunlearn.storage.layout import now_utc
from recunlearn.storage.ledger import ForgetLedger

pytestmark = [pytest.mark.spark]


def test_second_job_is_refused_by_name_until_the_first_releases(spark, layout):
    path = lock_path(layout)
    a, b = JobLock(spark, path), JobLock(spark, path)
    a.acquire("job-a")
    with pytest.raises(
        JobConflictError, match=r"another job \(job-a, pid .*this job \(job-b\) changed nothing"
    ):
        b.acquire("job-b")
    assert a.holder()["job_id"] == "job-a"
    a.release("job-a")
    b.acquire("job-b")
    assert b.holder()["job_id"] == "job-b" and b.holder()["released_at"] is None


def test_racing_jobs_get_exactly_one_lease(spark, layout):
    path = lock_path(layout)
    JobLock(spark, path).acquire("warm-up")  # the table exists; both racers MERGE into it
    JobLock(spark, path).release("warm-up")
    outcome: dict[str, str] = {}

    def take(name: str) -> None:
        try:
            JobLock(spark, path).acquire(name)
            outcome[name] = "held"
        except JobConflictError:
            outcome[name] = "refused"

    threads = [threading.Thread(target=take, args=(n,)) for n in ("racer-1", "racer-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome.values()) == ["held", "refused"]
    winner = next(n for n, o in outcome.items() if o == "held")
    assert JobLock(spark, path).holder()["job_id"] == winner


def test_lease_is_reentrant_within_a_job_and_released_on_error(spark, layout):
    path = lock_path(layout)
    with pytest.raises(RuntimeError):
        with holding(spark, layout, "outer"):
            with holding(spark, layout, "inner") as held:
                assert held == "outer"  # the inner step runs under the outer job's lease
            raise RuntimeError("the job fails")
    h = JobLock(spark, path).holder()
    assert h["job_id"] == "outer" and h["released_at"] is not None
    JobLock(spark, path).acquire("next")


def test_killed_holder_on_this_host_and_expired_leases_are_taken_over(spark, layout):
    from delta.tables import DeltaTable

    path = lock_path(layout)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock = JobLock(spark, path)
    lock.acquire("killed-job")
    DeltaTable.forPath(spark, path).update("name = 'tables'", {"pid": str(int(dead.stdout))})
    lock.acquire("rerun")  # the holder's process is gone: no wait
    assert lock.holder()["job_id"] == "rerun"
    # a lease held by a live process elsewhere is free once it expires
    DeltaTable.forPath(spark, path).update(
        "name = 'tables'",
        {
            "host": "'another-host'",
            "expires_at": f"timestamp'{(now_utc() - timedelta(minutes=1)).isoformat()}'",
        },
    )
    lock.acquire("after-expiry")
    assert lock.holder()["job_id"] == "after-expiry"


def test_unlearn_refused_while_another_job_holds_the_tables(spark, cfg, layout):
    from pipelines.unlearn import unlearn

    other = JobLock(spark, lock_path(layout))
    other.acquire("train-elsewhere")
    with pytest.raises(JobConflictError, match="train-elsewhere"):
        unlearn(spark, cfg=cfg, layout=layout)
    ledger = ForgetLedger(spark, layout.ledger)
    from recunlearn.storage.delta import table_exists

    assert not table_exists(spark, layout.ledger) or ledger.rows() == []  # nothing touched


@pytest.mark.slow
@pytest.mark.ray
def test_unlearn_racing_intake_and_an_ingest_of_the_user_being_forgotten(
    spark, cfg, layout, trained
):
    """While an unlearn job runs: a new forget request is filed (the intake's ledger MERGE races
    the job's transitions; Delta's conflicts are retried by name), and an ingest of a log holding
    new rows of the user being forgotten is refused by name. The job verifies its request only;
    the new one waits, received, for the next run; the refused ingest, rerun after, does not bring
    the forgotten user back."""
    import time

    from pipelines.forget import submit_user_requests
    from pipelines.ingest import ingest
    from pipelines.unlearn import unlearn
    from recunlearn.data.pseudonym import user_key
    from recunlearn.evidence.scan import rows_with_keys

    secret = b"test-secret-key-0123456789"
    raw, _ = trained
    [first] = submit_user_requests(spark, layout=layout, secret=secret, raw_ids=["5"])
    done: dict = {}
    job = threading.Thread(
        target=lambda: done.setdefault("result", unlearn(spark, cfg=cfg, layout=layout))
    )
    job.start()
    lock = JobLock(spark, lock_path(layout))
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.holder() or {}).get("job_id", "").startswith(
        "unlearn"
    ):
        time.sleep(0.2)
    [second] = submit_user_requests(spark, layout=layout, secret=secret, raw_ids=["6"])
    with pytest.raises(JobConflictError, match="unlearn-"):
        ingest(
            spark, cfg=cfg, layout=layout, raw_path=raw, secret=secret
        )  # holds user 5's rows again
    job.join(timeout=600)
    assert done["result"]["requests"] == [first["request_id"]]
    rows = {r["request_id"]: r for r in ForgetLedger(spark, layout.ledger).rows()}
    assert (
        rows[first["request_id"]]["status"] == "verified"
        and rows[second["request_id"]]["status"] == "received"
    )
    ingest(
        spark, cfg=cfg, layout=layout, raw_path=raw, secret=secret
    )  # after the job: user 5 stays gone
    assert rows_with_keys(layout.tables, [user_key(secret, "5")])[user_key(secret, "5")] == 0
    assert rows_with_keys(layout.tables, [user_key(secret, "6")])[user_key(secret, "6")] > 0
