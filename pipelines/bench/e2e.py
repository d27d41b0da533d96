"""``recunlearn bench e2e``: one forget request through the real engines, sharded against a
full retrain.

For each K in ``--ks`` (K=1 is the full retrain: one model over every user), the whole
pipeline as ``recunlearn run`` runs it (ingest into Delta, partition, train on Ray, forget a
batch, then one user), each in its own state folder, on one Spark session and one Ray
instance. The figure is the single request's job time from reading the ledger to the new
version's publication (``to_publish_seconds``: targets, delete, VACUUM, retraining, aggregator,
manifest, publish), its steps, and the full retrain's over it. The checks that run after the
publication (functional, membership) and the reference model are left out: the question is
how soon the forgotten user is out of the served model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from recunlearn.config import RunConfig
from recunlearn.storage.layout import Layout

log = logging.getLogger(__name__)


def run(
    spark: SparkSession, cfg: RunConfig, *, ks: list[int], state_root: Path, n_forget: int = 4
) -> dict[str, Any]:
    from pipelines.run import run_all

    out: dict[str, Any] = {"dataset": cfg.dataset.name, "runs": {}}
    for k in ks:
        cfg_k = cfg.model_copy(
            update={
                "data_dir": str(state_root / f"k{k}"),
                "sharding": cfg.sharding.model_copy(update={"n_shards": k}),
                "train": cfg.train.model_copy(update={"reference_model": False}),
                "unlearn": cfg.unlearn.model_copy(update={"retrain_reference": False}),
            }
        )
        layout = Layout(Path(cfg_k.data_dir))
        report = run_all(spark, cfg=cfg_k, layout=layout, n_forget=n_forget)
        one = report["unlearn_single"]
        out["runs"][str(k)] = {
            "n_shards": k,
            "method": cfg_k.sharding.method,
            "model": cfg_k.model.kind,
            "aggregator": cfg_k.aggregator.kind,
            "train_mode": cfg_k.train.mode,
            "to_publish_seconds": one["to_publish_seconds"],
            "end_to_end_seconds": one["end_to_end_seconds"],
            "fit_seconds": one["fit_seconds"],
            "shards_touched": one["shards_touched"],
            "steps_seconds": one["steps_seconds"],
            "audit_passed": report["audit"]["passed"],
            "ndcg@20_after": (report["metrics"]["after"]["ensemble"] or {}).get("ndcg@20"),
        }
        log.info("bench e2e K=%d: one request published in %.1fs", k, one["to_publish_seconds"])
    full = out["runs"].get("1")
    for r in out["runs"].values():
        r["speedup_vs_full_retrain"] = (
            round(full["to_publish_seconds"] / r["to_publish_seconds"], 2) if full else None
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# One forget request end to end ({result['dataset']})",
        "",
        "Job start (ledger read) to the new version's publication; K=1 is the full retrain.",
        "",
        "| K | partition | model | aggregator | published after s | speed-up vs K=1 | retraining s "
        "| "
        "delete + VACUUM s | audit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result["runs"].values(), key=lambda r: r["n_shards"]):
        st = r["steps_seconds"]
        lines.append(
            f"| {r['n_shards']} | {r['method']} | {r['model']} | {r['aggregator']} | "
            f"{r['to_publish_seconds']} | {r['speedup_vs_full_retrain']} | "
            f"{st.get('retrain_shards')} | "
            f"{st.get('delete')} + {st.get('vacuum')} | "
            f"{'passed' if r['audit_passed'] else 'FAILED'} |"
        )
    return "\n".join(lines) + "\n"
