"""Time, CPU time and peak memory of a step, over the whole process tree.

A step of recunlearn runs in several processes: the driver, Spark's JVM (and its Python
workers), Ray's head processes and workers. All are descendants of the driver, so a sampler
thread walks ``/proc`` every ``interval`` seconds and sums, over the driver and its
descendants:

- memory as PSS (proportional set size, from ``smaps_rollup``): pages shared between processes
  (Ray's object store, forked workers) count once in total, where RSS would count them in
  every process that maps them;
- CPU time (user + system): per process, its growth from the step's start (from zero for a
  process born during the step) to its last sample.

A process that starts and ends between two samples is missed, and memory between samples is
not seen: the figures are lower bounds at the sampling interval. Linux only.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None if it is gone. Reaped children's time
    (cutime, cstime) is left out: those children were counted while they ran."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces
    # fields after the name: state ppid ... utime (12th) stime (13th)
    ticks = int(rest[11]) + int(rest[12])
    return int(rest[1]), ticks / _TICK


def _memory(pid: int) -> int:
    """PSS in bytes (RSS where smaps_rollup cannot be read); 0 if the process is gone."""
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def tree(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and every descendant, by pid."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                stats[int(entry.name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in out:
            out[pid] = stats[pid][1]
            todo.extend(children.get(pid, []))
    return out


@dataclass
class Usage:
    """What one step used."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_bytes: int = 0
    peak_processes: int = 0
    samples: int = 0
    _first: dict[int, float] = field(default_factory=dict, repr=False)
    _last: dict[int, float] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.wall_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "peak_memory_bytes": self.peak_bytes,
            "peak_processes": self.peak_processes,
            "samples": self.samples,
        }


class Monitor:
    """``with Monitor() as usage: ...``: samples the process tree of ``root`` (default: this
    process) while the block runs; ``usage`` is filled in when it ends."""

    def __init__(self, root: int | None = None, interval: float = 0.5) -> None:
        self.root = root or os.getpid()
        self.interval = interval
        self.usage = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proctree-monitor", daemon=True)

    def _sample(self) -> None:
        cpu = tree(self.root)
        u = self.usage
        for pid, secs in cpu.items():
            u._first.setdefault(pid, secs if u.samples == 0 else 0.0)
            u._last[pid] = secs
        mem = sum(_memory(pid) for pid in cpu)
        u.peak_bytes = max(u.peak_bytes, mem)
        u.peak_processes = max(u.peak_processes, len(cpu))
        u.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Usage:
        self._t0 = time.perf_counter()
        self._sample()
        self._thread.start()
        return self.usage

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        u = self.usage
        u.wall_seconds = time.perf_counter() - self._t0
        u.cpu_seconds = sum(u._last[p] - u._first[p] for p in u._last)
