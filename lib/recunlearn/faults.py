"""Fault injection for the crash harness: ``RECUNLEARN_FAULT=<step>[@<seconds>]`` kills the
process with SIGKILL when the named step of a job starts (after ``seconds`` inside it, from a
timer, for a kill mid-step). Unset (always, outside tests), it does nothing. The steps are
the unlearn job's timed steps (``steps_seconds`` in its result: read_requests, delete,
vacuum, retrain_shards, publish, ...), ``audit`` and ``audit_record`` (the audit after its
scans, before it writes)."""

from __future__ import annotations

import os
import signal
import threading

ENV = "RECUNLEARN_FAULT"


def at(step: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, delay = spec.partition("@")
    if name != step:
        return
    if not delay or float(delay) <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    timer = threading.Timer(float(delay), os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
