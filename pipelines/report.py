"""``report.json`` and ``report.md`` of a run.

report.json schema (``schema_version`` 1; fields are only ever added, never renamed):
- ``dataset``, ``config_fingerprint``, ``created_at``, ``n_shards``, ``guarantee``
- ``metrics``: ``{before, before_retained, after}`` each with ``ensemble``, ``ensemble_mean``
  and ``reference``, each ``{"ndcg@20", "recall@20", "hr@20", "users"}``; ``before_retained``
  evaluates the original models on the users that remain after unlearning (same users as
  ``after``); ``reference`` after unlearning is the full model retrained without the users
- ``ratios``: ``ensemble_vs_reference_ndcg`` (before and after) and
  ``unlearn_compute_vs_full_training`` (touched-shard fit + aggregator fit over the full
  model's fit time)
- ``timings``: seconds per step (``ingest``, ``partition``, ``train``, ``unlearn`` with its
  own ``steps``), and ``full_training_fit_seconds``
- ``requests``: every request: ``request_id``, ``status``, ``outcome``, ``shards``,
  ``model_version``, timestamps, ``audit_passed``
- ``audit``: ``passed``, ``n_requests``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def _m(block: dict[str, Any] | None, key: str) -> float | None:
    return None if not block else block.get(key)


def build_report(run: dict[str, Any]) -> dict[str, Any]:
    ev = run["evaluations"]
    unl = run["unlearn"]
    comp = unl["compute"]
    shard_fit = sum(comp["shard_fit_seconds"].values())
    full_fit = run["train"]["reference_fit_seconds"]
    unlearn_fit = shard_fit + (comp["aggregator_fit_seconds"] or 0.0)
    ratios = {
        "ensemble_vs_reference_ndcg_before": _ratio(ev["before"]["ensemble"], ev["before"]["reference"]),
        "ensemble_vs_reference_ndcg_after": _ratio(ev["after"]["ensemble"], ev["after"]["reference"]),
        "unlearn_compute_vs_full_training": round(unlearn_fit / full_fit, 4) if full_fit else None,
        "unlearn_compute_per_shard_vs_full_training": (
            round((shard_fit / max(len(comp["shard_fit_seconds"]), 1) + comp["aggregator_fit_seconds"])
                  / full_fit, 4) if full_fit else None),
    }
    audit = run["audit"]
    by_req = {r["request_id"]: r for r in audit.get("requests", [])}
    requests = []
    for r in run["requests"]:
        a = by_req.get(r["request_id"])
        requests.append({**r, "audit_passed": None if a is None else a["passed"]})
    return {
        "schema_version": SCHEMA_VERSION, "created_at": run["created_at"],
        "dataset": run["dataset"], "config_fingerprint": run["config_fingerprint"],
        "n_shards": run["n_shards"], "guarantee": run["partition"]["guarantee"],
        "partition": {k: run["partition"][k] for k in ("sizes", "max_imbalance", "method")},
        "metrics": {k: {m: ev[k][m] for m in ("ensemble", "ensemble_mean", "reference")}
                    for k in ("before", "before_retained", "after")},
        "ratios": ratios,
        "timings": {**run["timings"], "unlearn_steps": unl["steps_seconds"],
                    "full_training_fit_seconds": full_fit,
                    "unlearn_fit_seconds": round(unlearn_fit, 3),
                    "unlearn_end_to_end_seconds": unl["end_to_end_seconds"]},
        "unlearn": {k: unl[k] for k in ("job_id", "shards_touched", "model_version",
                                         "parent_version", "delete_version", "checkpoints_removed")},
        "requests": requests,
        "audit": {"passed": audit.get("passed"), "n_requests": audit.get("n_requests", 0)},
    }


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b.get("ndcg@20"):
        return None
    return round(a["ndcg@20"] / b["ndcg@20"], 4)


def summary_table(report: dict[str, Any]) -> str:
    m = report["metrics"]
    rows = [("model", "NDCG@20", "Recall@20", "users")]
    for phase in ("before", "before_retained", "after"):
        for name in ("ensemble", "ensemble_mean", "reference"):
            b = m[phase][name]
            if b:
                rows.append((f"{name} [{phase}]", f"{b['ndcg@20']:.4f}", f"{b['recall@20']:.4f}",
                             str(b["users"])))
    t = report["timings"]
    r = report["ratios"]
    lines = _table(rows)
    lines += ["", *_table([
        ("figure", "value"),
        ("ensemble / reference NDCG@20 (before)", str(r["ensemble_vs_reference_ndcg_before"])),
        ("ensemble / reference NDCG@20 (after)", str(r["ensemble_vs_reference_ndcg_after"])),
        ("full model fit (s)", f"{t['full_training_fit_seconds']:.2f}"),
        ("unlearn fit: touched shards + aggregator (s)", f"{t['unlearn_fit_seconds']:.2f}"),
        ("unlearn compute / full training", str(r["unlearn_compute_vs_full_training"])),
        ("per touched shard + aggregator / full training", str(r["unlearn_compute_per_shard_vs_full_training"])),
        ("unlearn end to end (s)", f"{t['unlearn_end_to_end_seconds']:.2f}"),
        ("shards touched", str(report["unlearn"]["shards_touched"])),
        ("requests completed", str(sum(q["status"] == "completed" for q in report["requests"]))),
        ("requests rejected", str(sum(q["status"] == "rejected" for q in report["requests"]))),
        ("audit", "PASSED" if report["audit"]["passed"] else "FAILED"),
    ])]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows[1:])]


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "report.json"
    js.write_text(json.dumps(report, indent=2, default=str))
    md = folder / "report.md"
    md.write_text("\n".join([
        f"# recunlearn run: {report['dataset']}", "",
        f"Created {report['created_at']}; config {report['config_fingerprint']}; K = {report['n_shards']}.",
        "", f"**Guarantee:** {report['guarantee']}.", "",
        "Protocol: full ranking over all items, the user's training and validation items "
        "excluded, test items as truth; the reference is the full model (K=1) on the same split.",
        "", summary_table(report), "",
        "Timings (seconds): " + json.dumps(report["timings"]), "",
        f"Requests: {len(report['requests'])}; audit "
        f"{'passed' if report['audit']['passed'] else 'FAILED'} (see audit.md).", ""]))
    return js, md
