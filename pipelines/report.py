"""``report.json`` and ``report.md`` of a run.

report.json schema (``schema_version`` 1; fields are only ever added, never renamed):
- ``dataset``, ``config_fingerprint``, ``created_at``, ``n_shards``, ``guarantee``, ``partition``
- ``metrics``: ``{before, before_retained, after}``, each with ``ensemble`` (the published
  aggregator), ``ensemble_mean`` and ``reference`` (the full K=1 model), each
  ``{"ndcg@20", "recall@20", "hr@20", "users"}``, and ``aggregator`` (the published
  aggregator's kind; where it is ``mean``, ``ensemble_mean`` is the same model).
  ``before_retained`` scores the original models on the users that remain (the users of
  ``after``); ``reference`` after unlearning is the full model retrained without the
  forgotten users.
- ``ratios``: ``ensemble_vs_reference_ndcg_before`` / ``_after``;
  ``unlearn_compute_vs_full_training`` (one request touching one shard: shard fit +
  aggregator fit over the full model's fit), ``unlearn_batch_compute_vs_full_training``, and
  ``unlearn_compute_by_shard_vs_full_training`` (``per_shard``, ``min``, ``median``, ``max``:
  each shard's fit plus the aggregator's fit in the initial training, over the full fit).
- ``timings``: wall seconds per pipeline step, ``full_training_fit_seconds``.
- ``unlearn_batch`` / ``unlearn_single``: ``job_id``, ``requests``, ``shards_touched``,
  ``model_version``, ``delete_version``, ``steps_seconds`` (per unlearn step),
  ``fit_seconds``, ``compute_vs_full_training``, ``end_to_end_seconds`` (the whole job, its
  post-publication checks included), ``to_publish_seconds`` (job start to publication),
  ``checkpoints_removed``, ``functional_mean`` (mean NDCG@20 of the forgotten users'
  held-out items under the original, unlearned and retrained models).
- ``requests``: every request: ``request_id``, ``outcome``, ``status``, ``reason``,
  ``shards``, ``model_version``, ISO timestamps, ``audit_passed``.
- ``audit``: ``passed``, ``n_requests``.
- ``fairness``: ``{"<phase> <model>": A-IGF}`` for phases before / after and models ensemble
  / reference: ``active``, ``inactive``, ``gap`` (NDCG@20 of the 5% most active users minus
  the rest), and for the ensemble ``shard_spread`` over home shards.
- ``storage``: bytes on disk per artifact after the last unlearn job (each Delta table as
  ``table:<name>``, ``checkpoints``, ``models``); each ``unlearn_*`` has its own
  ``storage_bytes`` and ``membership_mean`` (mean membership probability of the forgotten
  users under the original and the unlearned model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

SCHEMA_VERSION = 1


def _fit_seconds(unl: dict[str, Any]) -> float:
    comp = unl["compute"]
    return sum(comp["shard_fit_seconds"].values()) + (comp["aggregator_fit_seconds"] or 0.0)


def _unlearn_summary(unl: dict[str, Any], full_fit: float | None) -> dict[str, Any]:
    fit = _fit_seconds(unl)
    functional = list(unl.get("functional", {}).values())

    def mean(vals: list[float | None]) -> float | None:
        have = [v for v in vals if v is not None]
        return round(sum(have) / len(have), 5) if have else None

    return {
        "job_id": unl["job_id"],
        "requests": len(unl["requests"]),
        "shards_touched": unl["shards_touched"],
        "model_version": unl["model_version"],
        "shards_retrained": unl.get("shards_retrained", unl["shards_touched"]),
        "partition_mode": unl.get("partition_mode", "frozen"),
        "users_moved": (unl.get("partition") or {}).get("users_moved"),
        "parent_version": unl["parent_version"],
        "delete_version": unl["delete_version"],
        "checkpoints_removed": unl["checkpoints_removed"],
        "steps_seconds": unl["steps_seconds"],
        "fit_seconds": round(fit, 3),
        "shard_fit_seconds": unl["compute"]["shard_fit_seconds"],
        "aggregator_fit_seconds": unl["compute"]["aggregator_fit_seconds"],
        "compute_vs_full_training": round(fit / full_fit, 4) if full_fit else None,
        "end_to_end_seconds": unl["end_to_end_seconds"],
        "to_publish_seconds": unl.get("to_publish_seconds"),
        "functional_mean": {
            k: mean([f.get(k) for f in functional])
            for k in ("ndcg@20_original", "ndcg@20_unlearned", "ndcg@20_retrained")
        },
        "membership_mean": {
            k: mean([(f.get("membership") or {}).get(k) for f in functional])
            for k in ("original", "unlearned")
        },
        "storage_bytes": unl.get("storage_bytes"),
    }


def build_report(run: dict[str, Any]) -> dict[str, Any]:
    ev = run["evaluations"]
    full_fit = run["train"]["reference_fit_seconds"]
    batch = _unlearn_summary(run["unlearn"], full_fit)
    single = _unlearn_summary(run["unlearn_single"], full_fit)
    by_shard = _per_shard_cost(run["train"], full_fit)
    ratios = {
        "ensemble_vs_reference_ndcg_before": _ratio(
            ev["before"]["ensemble"], ev["before"]["reference"]
        ),
        "ensemble_vs_reference_ndcg_after": _ratio(
            ev["after"]["ensemble"], ev["after"]["reference"]
        ),
        # one request touching one shard: its shard fit + aggregator refit over the full fit
        "unlearn_compute_vs_full_training": single["compute_vs_full_training"],
        "unlearn_batch_compute_vs_full_training": batch["compute_vs_full_training"],
        # what one request would cost in each shard, from the initial training's own fits
        "unlearn_compute_by_shard_vs_full_training": by_shard,
    }
    audit = run["audit"]
    by_req = {r["request_id"]: r for r in audit.get("requests", [])}
    requests = []
    for r in run["requests"]:
        a = by_req.get(r["request_id"])
        requests.append({**r, "audit_passed": None if a is None else a["passed"]})
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": run["created_at"],
        "dataset": run["dataset"],
        "config_fingerprint": run["config_fingerprint"],
        "n_shards": run["n_shards"],
        "guarantee": run["partition"]["guarantee"],
        "partition": {
            k: run["partition"][k]
            for k in ("sizes", "max_imbalance", "method", "train_rows", "row_imbalance")
        },
        "metrics": {
            k: {m: ev[k].get(m) for m in ("ensemble", "ensemble_mean", "reference", "aggregator")}
            for k in ("before", "before_retained", "after")
        },
        "ratios": ratios,
        "timings": {
            **run["timings"],
            "full_training_fit_seconds": full_fit,
            "train_shards_wall_seconds": run["train"]["shards_wall_seconds"],
            "train_aggregator_wall_seconds": run["train"]["aggregator_wall_seconds"],
        },
        "unlearn_batch": batch,
        "unlearn_single": single,
        "requests": requests,
        "audit": {"passed": audit.get("passed"), "n_requests": audit.get("n_requests", 0)},
        "fairness": {
            f"{phase} {name}": ev[phase]["fairness"][name]
            for phase in ("before", "after")
            for name in ("ensemble", "reference")
            if ev[phase].get("fairness", {}).get(name)
        },
        "storage": single.get("storage_bytes"),
    }


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b.get("ndcg@20"):
        return None
    return round(a["ndcg@20"] / b["ndcg@20"], 4)


def summary_table(report: dict[str, Any]) -> str:
    m = report["metrics"]
    rows = [("model", "NDCG@20", "Recall@20", "users")]
    for phase in ("before", "before_retained", "after"):
        kind = m[phase].get("aggregator") or "published"
        # each model once, named by its aggregator: the mean row only where it is another model
        models = [
            (f"ensemble ({kind})", m[phase]["ensemble"]),
            *([("ensemble (mean)", m[phase]["ensemble_mean"])] if kind != "mean" else []),
            ("reference (full model)", m[phase]["reference"]),
        ]
        for name, b in models:
            if b:
                rows.append(
                    (
                        f"{name} [{phase}]",
                        f"{b['ndcg@20']:.4f}",
                        f"{b['recall@20']:.4f}",
                        str(b["users"]),
                    )
                )
    t = report["timings"]
    r = report["ratios"]
    b, one = report["unlearn_batch"], report["unlearn_single"]
    lines = _table(rows)
    lines += [
        "",
        *_table(
            [
                ("figure", "value"),
                (
                    "ensemble / reference NDCG@20 (before)",
                    str(r["ensemble_vs_reference_ndcg_before"]),
                ),
                (
                    "ensemble / reference NDCG@20 (after)",
                    str(r["ensemble_vs_reference_ndcg_after"]),
                ),
                (
                    "full model fit (s)",
                    _secs(t["full_training_fit_seconds"]),
                ),  # none without a reference
                (
                    f"batch unlearn: {b['requests']} users, shards {b['shards_touched']}: fit (s)",
                    f"{b['fit_seconds']:.2f}",
                ),
                ("batch unlearn end to end (s)", f"{b['end_to_end_seconds']:.2f}"),
                (
                    f"single request, shard {one['shards_touched']}: shard + aggregator fit (s)",
                    f"{one['fit_seconds']:.2f}",
                ),
                (
                    "single request compute / full training",
                    str(r["unlearn_compute_vs_full_training"]),
                ),
                (
                    "one shard + aggregator / full, over shards (min/median/max)",
                    "/".join(
                        str(r["unlearn_compute_by_shard_vs_full_training"][q])
                        for q in ("min", "median", "max")
                    )
                    if r["unlearn_compute_by_shard_vs_full_training"]
                    else "-",
                ),
                ("single request end to end (s)", f"{one['end_to_end_seconds']:.2f}"),
                (
                    "single request, job start to published version (s)",
                    _secs(one.get("to_publish_seconds")),
                ),
                *(
                    [
                        (
                            "strict partition: users moved, shards retrained (batch; single)",
                            f"{b['users_moved']}, {b['shards_retrained']}; {one['users_moved']}, "
                            f"{one['shards_retrained']}",
                        )
                    ]
                    if one.get("partition_mode") == "strict"
                    else []
                ),
                (
                    "membership probability of the forgotten users, original -> unlearned (batch)",
                    " -> ".join(str(b["membership_mean"][w]) for w in ("original", "unlearned")),
                ),
                ("requests verified (distinct)", str(_distinct(report, "verified"))),
                ("requests rejected (distinct)", str(_distinct(report, "rejected"))),
                (
                    "duplicate submissions",
                    str(sum(q["outcome"] == "duplicate" for q in report["requests"])),
                ),
                ("audit", "PASSED" if report["audit"]["passed"] else "FAILED"),
            ]
        ),
    ]
    return "\n".join(lines)


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _per_shard_cost(train: dict[str, Any], full_fit: float | None) -> dict[str, Any] | None:
    if not full_fit:
        return None
    agg = train["aggregator_fit_seconds"] or 0.0
    per = {
        k: round((v + agg) / full_fit, 4)
        for k, v in sorted(train["shard_fit_seconds"].items(), key=lambda kv: int(kv[0]))
    }
    vals = sorted(per.values())
    return {"per_shard": per, "min": vals[0], "median": vals[len(vals) // 2], "max": vals[-1]}


def _distinct(report: dict[str, Any], status: str) -> int:
    return len({q["request_id"] for q in report["requests"] if q["status"] == status})


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return [fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows[1:])]


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "report.json"
    js.write_text(json.dumps(report, indent=2, default=str))
    md = folder / "report.md"
    md.write_text(
        "\n".join(
            [
                f"# recunlearn run: {report['dataset']}",
                "",
                f"Created {report['created_at']}; config {report['config_fingerprint']}; K = "
                f"{report['n_shards']}.",
                "",
                f"**Guarantee:** {report['guarantee']}.",
                "",
                "Protocol: full ranking over all items, the user's training and validation items "
                "excluded, test items as truth; the reference is the full model (K=1) on the same "
                "split.",
                "",
                summary_table(report),
                "",
                "Timings (seconds): " + json.dumps(report["timings"]),
                "",
                "Unlearn steps, batch job (seconds): "
                + json.dumps(report["unlearn_batch"]["steps_seconds"]),
                "",
                "Unlearn steps, single request (seconds): "
                + json.dumps(report["unlearn_single"]["steps_seconds"]),
                "",
                "Functional check, mean NDCG@20 of forgotten users' held-out items (batch): "
                + json.dumps(report["unlearn_batch"]["functional_mean"]),
                "",
                f"Requests: {len(report['requests'])}; audit "
                f"{'passed' if report['audit']['passed'] else 'FAILED'} (see audit.md).",
                "",
            ]
        )
    )
    return js, md
