"""The whole pipeline on one data set, as ``make run`` runs it: fetch, ingest, partition,
train (shards, aggregator, reference), evaluate, file forget requests, unlearn, audit,
evaluate again, and write report.json / report.md."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from pipelines.audit import audit
from pipelines.evaluate import evaluate_published
from pipelines.forget import submit_user_requests
from pipelines.ingest import ingest
from pipelines.partition import partition_users
from pipelines.report import build_report, summary_table, write_report
from pipelines.train import train_all
from pipelines.unlearn import unlearn
from recunlearn.config import RunConfig
from recunlearn.data.datasets import fetch
from recunlearn.data.pseudonym import secret_from_config, user_key
from recunlearn.data.readers import read_interactions
from recunlearn.hashing import fingerprint
from recunlearn.seeding import numpy_rng
from recunlearn.storage.joblock import holds_tables, lock_path
from recunlearn.storage.layout import Layout
from recunlearn.storage.ledger import ForgetLedger

log = logging.getLogger(__name__)

STATE_DIRS = ("tables", "checkpoints", "models", "reports", "scratch")


def raw_data_path(cfg: RunConfig, layout: Layout) -> Path:
    if cfg.dataset.path:
        return Path(cfg.dataset.path)
    return fetch(cfg.dataset.name, layout.raw)


def reset_state(layout: Layout) -> None:
    """Remove tables, checkpoints, models and reports (keeps downloaded data, secrets and the
    job lock, which the run itself holds)."""
    keep = Path(lock_path(layout))
    for name in STATE_DIRS:
        folder = layout.root / name
        if name == "tables" and folder.is_dir():
            for table in folder.iterdir():
                if table != keep:
                    shutil.rmtree(table, ignore_errors=True)
            continue
        shutil.rmtree(folder, ignore_errors=True)


def choose_forget_set(spark: SparkSession, cfg: RunConfig, raw_path: Path, n: int) -> list[str]:
    """``n`` raw user ids drawn with the run's seed (held in memory only)."""
    raw = read_interactions(spark, cfg.dataset, raw_path).select("raw_user").distinct()
    ids = np.array(sorted(r["raw_user"] for r in raw.collect()))
    return [
        str(x) for x in np.sort(numpy_rng(cfg.seed, "forget-set").choice(ids, n, replace=False))
    ]


@holds_tables("run")  # one lease across every step
def run_all(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout, n_forget: int = 12, fresh: bool = True
) -> dict[str, Any]:
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t0, 3)
        return out

    if fresh:
        reset_state(layout)
    raw_path = timed("fetch", raw_data_path, cfg, layout)
    secret = secret_from_config(cfg.pseudonym, layout.root)
    ingest_stats = timed(
        "ingest", ingest, spark, cfg=cfg, layout=layout, raw_path=raw_path, secret=secret
    )
    part = timed("partition", partition_users, spark, cfg=cfg, layout=layout)
    train = timed("train", train_all, spark, cfg=cfg, layout=layout, partition=part)
    before = timed(
        "evaluate_before", evaluate_published, spark, cfg=cfg, layout=layout, label="before"
    )

    forget_ids = choose_forget_set(spark, cfg, raw_path, n_forget)
    # Two jobs: a batch of users (with a duplicate, an unknown id and a malformed one, which
    # the ledger must record with their outcomes and lose nothing), then a single user, which
    # measures what one request that touches one shard costs.
    batch, single = forget_ids[:-1], forget_ids[-1:]
    outcomes = timed(
        "forget_intake",
        submit_user_requests,
        spark,
        layout=layout,
        secret=secret,
        raw_ids=batch + [batch[0], "no-such-user-0", "bad id; DROP TABLE"],
    )
    accepted = {o["user_key"] for o in outcomes if o["outcome"] == "accepted"}
    single_key = user_key(secret, single[0])
    before_retained = timed(
        "evaluate_before_retained",
        evaluate_published,
        spark,
        cfg=cfg,
        layout=layout,
        exclude_keys=sorted(accepted | {single_key}),
    )
    unl = timed("unlearn", unlearn, spark, cfg=cfg, layout=layout)
    outcomes += submit_user_requests(spark, layout=layout, secret=secret, raw_ids=single)
    unl_single = timed("unlearn_single", unlearn, spark, cfg=cfg, layout=layout)
    aud = timed("audit", audit, spark, layout=layout, secret=secret, raw_ids=forget_ids)
    after = timed(
        "evaluate_after", evaluate_published, spark, cfg=cfg, layout=layout, label="after"
    )

    ledger_rows = {r["request_id"]: r for r in ForgetLedger(spark, layout.ledger).rows()}
    requests = []
    for o in outcomes:
        row = ledger_rows.get(o["request_id"], {})
        requests.append(
            {
                "request_id": o["request_id"],
                "outcome": o["outcome"],
                "status": row.get("status"),
                "reason": row.get("reason"),
                "shards": row.get("shards"),
                "model_version": row.get("model_version"),
                **{
                    k: (row[k].isoformat() if row.get(k) else None)
                    for k in (
                        "received_at",
                        "started_at",
                        "deleted_at",
                        "published_at",
                        "completed_at",
                    )
                },
            }
        )
    run = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": cfg.dataset.name,
        "config_fingerprint": fingerprint(cfg),
        "n_shards": cfg.sharding.n_shards,
        "partition": part,
        "ingest": ingest_stats,
        "train": train,
        "unlearn": unl,
        "unlearn_single": unl_single,
        "audit": aud,
        "requests": requests,
        "timings": timings,
        "evaluations": {"before": before, "before_retained": before_retained, "after": after},
    }
    report = build_report(run)
    js, md = write_report(report, layout.reports)
    report["_paths"] = {"json": str(js), "md": str(md), "audit": str(layout.reports / "audit.md")}
    report["_table"] = summary_table(report)
    return report
