"""One job at a time on the tables: a lease in a Delta table.

Ingest, partition, train and unlearn all write the interactions, the shard map, the ledger or
the model registry, and two of them at once would interleave deletes, retraining and
publications. Each takes the ``tables`` lease first: a row in ``tables/job_locks`` written by a
MERGE that only takes a free lease (released, expired, or held by a process on this host that
no longer exists, as after a crash). Two jobs that race for it are serialised by Delta's
optimistic concurrency (the loser's MERGE conflicts, is retried and then finds the lease
taken); the second job raises ``JobConflictError`` naming the holder, before it changes
anything. Forget intake only appends requests and does not take the lease: requests filed
during an unlearn job are picked up by the next one.

The lease is re-entrant within a thread (``recunlearn run`` holds it across its steps, an
unlearn job across the exact retrain it triggers) and released when the job ends, however it
ends; a killed job's lease is taken over at once on the same host, elsewhere when it expires.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
import uuid
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import pyarrow.dataset as ds

from recunlearn.errors import JobConflictError
from recunlearn.storage.delta import merge_into, read_rows, table_exists, with_retries
from recunlearn.storage.layout import Layout, now_utc

log = logging.getLogger(__name__)

LOCK_SCHEMA = (
    "name string, job_id string, host string, pid long, acquired_at timestamp, "
    "expires_at timestamp, released_at timestamp"
)
TABLES = "tables"
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_held = threading.local()  # lock path -> job id held by this thread

J = TypeVar("J", bound=Callable[..., Any])


def lock_path(layout: Layout) -> str:
    return layout.table("job_locks")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class JobLock:
    def __init__(
        self, spark: Any, path: str, *, name: str = TABLES, ttl_hours: float = 12.0
    ) -> None:
        self.spark, self.path, self.name, self.ttl = spark, path, name, timedelta(hours=ttl_hours)
        self.host, self.pid = socket.gethostname(), os.getpid()

    def holder(self) -> dict[str, Any] | None:
        if not table_exists(self.spark, self.path):
            return None
        rows = read_rows(self.path, ds.field("name") == self.name)
        return rows[0] if rows else None

    def acquire(self, job_id: str) -> None:
        """Take the lease for ``job_id`` or raise ``JobConflictError`` naming its holder."""
        if not _JOB_ID.match(job_id):
            raise ValueError(f"job id {job_id!r}: letters, digits and _.:- only")
        now = now_utc()
        cur = self.holder()
        stale = None
        if (
            cur
            and cur["released_at"] is None
            and cur["host"] == self.host
            and not _alive(int(cur["pid"]))
        ):
            stale = cur["job_id"]  # its process is gone (killed): the lease is free
            log.warning(
                "job lock: taking over the lease of %s (pid %s ended without releasing it)",
                stale,
                cur["pid"],
            )
        row = {
            "name": self.name,
            "job_id": job_id,
            "host": self.host,
            "pid": self.pid,
            "acquired_at": now,
            "expires_at": now + self.ttl,
            "released_at": None,
        }
        if cur is None and not table_exists(self.spark, self.path):
            with_retries(
                lambda: (
                    self.spark.createDataFrame([], LOCK_SCHEMA)
                    .write.format("delta")
                    .mode("append")
                    .save(self.path)
                ),
                what="create job lock table",
            )
        free = "t.released_at IS NOT NULL OR t.expires_at < s.acquired_at"
        if stale:
            free += f" OR t.job_id = '{stale}'"

        # one delta-rs MERGE: a racing taker's commit conflicts and retries
        with_retries(
            lambda: (
                merge_into(self.path, [row], "t.name = s.name")
                .when_matched_update_all(predicate=free)
                .when_not_matched_insert_all()
                .execute()
            ),
            what="take the job lock",
        )
        got = self.holder()
        if not got or got["job_id"] != job_id:
            h = got or {}
            raise JobConflictError(
                f"another job ({h.get('job_id')}, pid {h.get('pid')} on {h.get('host')}, since "
                f"{h.get('acquired_at')}) is working on the tables; this job ({job_id}) changed "
                f"nothing "
                f"and stops. Run it again when that one has finished (its lease expires at "
                f"{h.get('expires_at')})."
            )
        log.info("job lock: %s holds the tables", job_id)

    def release(self, job_id: str) -> None:
        row = {"name": self.name, "job_id": job_id, "released_at": now_utc()}
        with_retries(
            lambda: (
                merge_into(
                    self.path,
                    [row],
                    "t.name = s.name AND t.job_id = s.job_id AND t.released_at IS NULL",
                )
                .when_matched_update(updates={"released_at": "s.released_at"})
                .execute()
            ),
            what="release the job lock",
        )


@contextmanager
def holding(spark: Any, layout: Layout, job_id: str, *, ttl_hours: float = 12.0) -> Iterator[str]:
    """Hold the tables' lease for the block (re-entrant within a thread)."""
    path = lock_path(layout)
    held = getattr(_held, "locks", None)
    if held is None:
        held = _held.locks = {}
    if path in held:
        yield held[path]
        return
    lock = JobLock(spark, path, ttl_hours=ttl_hours)
    lock.acquire(job_id)
    held[path] = job_id
    try:
        yield job_id
    finally:
        held.pop(path, None)
        lock.release(job_id)


def holds_tables(kind: str) -> Callable[[J], J]:
    """Decorate a job function ``fn(spark, *, cfg, layout, ...)`` to hold the tables' lease."""

    def wrap(fn: J) -> J:
        @functools.wraps(fn)
        def inner(spark: Any, *args: Any, **kwargs: Any) -> Any:
            cfg, layout = kwargs["cfg"], kwargs["layout"]
            job_id = f"{kind}-{now_utc().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
            with holding(spark, layout, job_id, ttl_hours=cfg.unlearn.lock_ttl_hours):
                return fn(spark, *args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
