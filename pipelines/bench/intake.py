"""``recunlearn bench intake``: how long an operator waits for ``recunlearn forget --user ID``.

The data set is ingested and partitioned once (``prepare``: Spark, in a state folder of the
benchmark's own); the engines are then shut down (by the job) and each forget request is filed
by the real CLI in a fresh process, as an operator or a privacy desk's script would, one distinct
user a run. The figure is each process's wall time, interpreter start to exit; ``recunlearn status``
is timed the same way. Raw ids are sampled from the log in Spark and kept in memory only."""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recunlearn.config import RunConfig
from recunlearn.storage.delta import table_exists
from recunlearn.storage.layout import Layout

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def prepare(spark: SparkSession, cfg: RunConfig, layout: Layout, *, n_users: int) -> list[str]:
    """Ingest and partition when the state folder has no interaction table yet; return
    ``n_users`` raw user ids of the log (a seeded sample)."""
    from pyspark.sql import functions as F

    from pipelines.ingest import ingest
    from pipelines.partition import partition_users
    from pipelines.run import raw_data_path
    from recunlearn.data.pseudonym import secret_from_config
    from recunlearn.data.readers import read_interactions

    raw = raw_data_path(cfg, layout)
    if not table_exists(None, layout.interactions):
        ingest(
            spark,
            cfg=cfg,
            layout=layout,
            raw_path=raw,
            secret=secret_from_config(cfg.pseudonym, layout.root),
        )
        partition_users(spark, cfg=cfg, layout=layout)
    users = (
        read_interactions(spark, cfg.dataset, raw)
        .select("raw_user")
        .distinct()
        .orderBy(F.xxhash64(F.lit(cfg.seed), "raw_user"))
        .limit(n_users)
        .collect()
    )
    return [r["raw_user"] for r in users]


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "recunlearn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]


def _timed(args: list[str]) -> tuple[float, int]:
    """Run one command: wall seconds and exit code (2, a rejection, is an answer too)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600
    )
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 2):
        log.warning(
            "bench intake: %s exited %d: %s", args[1:2], done.returncode, done.stderr[-500:]
        )
    return seconds, done.returncode


def run(
    cfg: RunConfig,
    *,
    users: list[str],
    prepare_s: float,
    config: str,
    overrides: list[str],
    state: Path,
    n_status: int = 5,
) -> dict[str, Any]:
    """Time ``forget --user`` for each of ``users`` (from ``prepare``, with the engines shut
    down since) and ``status`` ``n_status`` times, against the state folder ``state``."""
    common = [
        "--config",
        config,
        *[a for o in overrides for a in ("--set", o)],
        "--set",
        f"data_dir={state}",
    ]
    forget = [_timed([*_cli(), "forget", "--user", raw, *common]) for raw in users]
    status = [_timed([*_cli(), "status", "--json", *common]) for _ in range(n_status)]

    def summary(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {
            "p50": round(statistics.median(xs), 3),
            "p90": round(xs[int(0.9 * (len(xs) - 1))], 3),
            "max": round(xs[-1], 3),
            "min": round(xs[0], 3),
            "n": len(xs),
        }

    codes = Counter(str(f[1]) for f in forget)
    out: dict[str, Any] = {
        "dataset": cfg.dataset.name,
        "n_shards": cfg.sharding.n_shards,
        "prepare_seconds": round(prepare_s, 1),
        "forget_seconds": summary([f[0] for f in forget]),
        "forget_exit_codes": dict(sorted(codes.items())),
        "status_seconds": summary([s[0] for s in status]),
        "command": "recunlearn forget --user ID (a fresh process each run, one distinct user each)",
        "secret_from": "RECUNLEARN_PSEUDONYM_KEY"
        if os.environ.get("RECUNLEARN_PSEUDONYM_KEY")
        else "key file",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
    }
    log.info(
        "bench intake: forget p50 %.2fs over %d runs", out["forget_seconds"]["p50"], len(users)
    )
    return out


def markdown(result: dict[str, Any]) -> str:
    f, s = result["forget_seconds"], result["status_seconds"]
    return "\n".join(
        [
            f"# Filing a forget request from the CLI ({result['dataset']})",
            "",
            f"{result['command']}; engines not running; K={result['n_shards']}.",
            "",
            "| command | runs | p50 s | p90 s | max s |",
            "|---|---|---|---|---|",
            f"| recunlearn forget --user ID | {f['n']} | {f['p50']} | {f['p90']} | {f['max']} |",
            f"| recunlearn status --json | {s['n']} | {s['p50']} | {s['p90']} | {s['max']} |",
            "",
            f"Exit codes of the forget runs (0: accepted or duplicate, 2: rejected): "
            f"{result['forget_exit_codes']}.",
            "",
        ]
    )
