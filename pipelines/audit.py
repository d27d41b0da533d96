"""Audit of finished requests: the evidence a privacy officer needs, per request.

Checks: (1) no data Parquet file under any table, in any version still on disk, holds the
user's rows; (2) no ``_delta_log`` file holds the user's key or (when given) raw id;
(3) every published shard that held the user was trained on a table version after the delete;
(4) no checkpoint trained on the forgotten rows remains; (5) the published model has no
trained vector for the user; plus the functional check recorded by the unlearn job.
Results are appended to the Delta ``audit`` table and written as a Markdown report.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from recunlearn import faults
from recunlearn.data.pseudonym import user_key
from recunlearn.evidence.mia import has_power
from recunlearn.evidence.scan import (
    delta_log_hits,
    rows_with_items,
    rows_with_keys,
    rows_with_pairs,
)
from recunlearn.logs import context
from recunlearn.serving import load_ensemble
from recunlearn.storage import checkpoints
from recunlearn.storage.audit_table import append_audit
from recunlearn.storage.layout import Layout, new_job_id, now_utc
from recunlearn.storage.ledger import (
    INTERACTION,
    ITEM,
    RETRAINED,
    USER,
    VERIFIED,
    ForgetLedger,
)
from recunlearn.storage.registry import ModelRegistry

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def audit(
    spark: SparkSession | None,
    *,
    layout: Layout,
    secret: bytes,
    raw_ids: list[str] | None = None,
    request_ids: list[str] | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Audit the data requests that are ``retrained`` or ``verified`` (only ``request_ids``,
    when given) against the published version; each ``retrained`` one that passes moves to
    ``verified``. The Markdown and JSON reports are written when every request is audited."""
    faults.at("audit")  # the crash harness's kill point (RECUNLEARN_FAULT; off otherwise)
    ledger = ForgetLedger(spark, layout.ledger)
    wanted = None if request_ids is None else set(request_ids)
    done = [
        r
        for r in ledger.requests((RETRAINED, VERIFIED))
        if r.is_data and (wanted is None or r.request_id in wanted)
    ]
    version = ModelRegistry(layout).current_version()
    if not done or version is None:
        return {
            "requests": [],
            "passed": True,
            "verified": 0,
            "note": "no retrained requests to audit",
        }
    keys = [r.user_key for r in done if r.target == USER and r.user_key]
    raw_by_key = {user_key(secret, r): r for r in (raw_ids or [])}
    rows_found = rows_with_keys(layout.tables, keys)
    item_rows = rows_with_items(layout.tables, [r.item for r in done if r.target == ITEM])
    pair_rows = rows_with_pairs(layout.tables, [r.pair for r in done if r.target == INTERACTION])
    # raw-id hits are labelled with the key they belong to, never with the id itself
    log_hits = delta_log_hits(
        layout.tables,
        keys=keys,
        raw_ids={raw: f"raw id of {key[:8]}..." for key, raw in raw_by_key.items()},
    )
    # a mean aggregator has no parameters and was fit on nothing: it cannot hold a forgotten row
    metas = [
        m
        for m in checkpoints.all_metas(layout.checkpoints)
        if m["exists"] and not (m.get("component") == "aggregator" and m.get("kind") == "mean")
    ]
    ens = load_ensemble(version)
    still_known = dict(zip(keys, ens.knows(np.asarray(keys, dtype=str)), strict=True))
    reference_keys = set()
    if version.reference is not None:
        reference_keys = set(checkpoints.load_state(version.reference.path)["user_keys"])
    stamp = now_utc()
    results: list[dict[str, Any]] = []
    for r in done:
        kind = r.target
        key, dv, shards = r.user_key or "", r.delete_version or 0, list(r.shards)
        stale_published = [k for k in shards if (version.shards[k].delta_version or 0) < dv]
        stale_ckpts = [
            m["component"] + "/" + m["run_id"]
            for m in metas
            if m["delta_version"] < dv and (m["shard_id"] is None or m["shard_id"] in shards)
        ]
        raw = raw_by_key.get(key)
        if kind == USER:
            found = rows_found.get(key, 0)
            my_log_hits = {f: h for f, h in log_hits.items() if any(key[:8] in x for x in h)}
            known = bool(still_known[key]) or key in reference_keys
        else:  # the user stays (an item or one interaction goes): count the rows that must go
            found = item_rows[r.item] if kind == ITEM else pair_rows[r.pair]
            my_log_hits, known = {}, False
        passed = (
            found == 0 and not my_log_hits and not stale_published and not stale_ckpts and not known
        )
        evidence = json.loads(r.evidence) if r.evidence else {}
        membership = evidence.pop("membership", None)
        results.append(
            {
                "request_id": r.request_id,
                "user_key": r.user_key,
                "audited_at": stamp,
                "model_version": version.version,
                "passed": passed,
                "parquet_rows_found": int(found),
                "delta_log_hits": len(my_log_hits),
                "stale_published_shards": len(stale_published),
                "stale_checkpoints": len(stale_ckpts),
                "key_in_published_model": known,
                "guarantee": version.guarantee,
                "details": json.dumps(
                    {
                        "target_type": kind,
                        "item_idx": r.item_idx,
                        "shards": shards,
                        "delete_version": dv,
                        "raw_id_checked": bool(raw),
                        "log_files": sorted(my_log_hits),
                        "stale_checkpoints": stale_ckpts,
                        "functional": evidence,
                        "membership": membership,
                    }
                ),
            }
        )
    faults.at("audit_record")  # a kill point after the scans, before anything is written
    append_audit(spark, layout.audit, results)
    job_id = job_id or new_job_id("audit")
    status = {r.request_id: r.state for r in done}
    verified = [
        {"request_id": x["request_id"], "completed_at": stamp}
        for x in results
        if x["passed"] and status[x["request_id"]] == RETRAINED
    ]
    ledger.transition(verified, VERIFIED, job_id=job_id)
    failed = [x["request_id"] for x in results if not x["passed"]]
    if failed:  # the state stays; the reason says why
        ledger.note_audit_failure(failed, job_id=job_id, version=version.version)
    report = {
        "audited_at": stamp.isoformat(),
        "model_version": version.version,
        "guarantee": version.guarantee,
        "passed": all(x["passed"] for x in results),
        "n_requests": len(results),
        "raw_ids_checked": len(raw_by_key),
        "verified": len(verified),
        "requests": [
            {**x, "audited_at": stamp.isoformat(), "details": json.loads(x["details"])}
            for x in results
        ],
    }
    if request_ids is None:
        layout.reports.mkdir(parents=True, exist_ok=True)
        (layout.reports / "audit.json").write_text(json.dumps(report, indent=2, default=str))
        (layout.reports / "audit.md").write_text(render_audit_md(report))
    log.info(
        "audit: %d request(s), passed=%s, verified %d",
        len(results),
        report["passed"],
        len(verified),
        extra=context(
            job_id=job_id,
            request_ids=[x["request_id"] for x in results],
            model_version=version.version,
        ),
    )
    return report


def render_audit_md(report: dict[str, Any]) -> str:
    lines = [
        "# Unlearning audit",
        "",
        f"Audited at {report['audited_at']} against model version v{report['model_version']}.",
        "",
        f"**Guarantee of this model version:** {report['guarantee']}.",
        "",
        f"Overall: **{'PASSED' if report['passed'] else 'FAILED'}** for {report['n_requests']} "
        f"retrained or verified request(s); raw ids checked in `_delta_log`: "
        f"{report['raw_ids_checked']}.",
        "",
        "| request | target | parquet rows | log hits | stale shards | stale ckpts | in model | "
        "NDCG@20 orig / unlearned / retrained | membership orig -> unlearned | passed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["requests"]:
        f = r["details"].get("functional") or {}
        nd = " / ".join(
            str(f.get(f"ndcg@20_{m}", "-")) for m in ("original", "unlearned", "retrained")
        )
        mem = r["details"].get("membership") or {}
        mp = "-"
        if mem:
            lo, hi = mem["attack_shadow_ci"] or (None, None)
            power = "has power" if has_power(mem["attack_shadow_ci"]) else "no power"
            mp = (
                f"{mem['original']} -> {mem['unlearned']} (attack AUC {mem['attack_shadow_auc']} "
                f"[{lo}, {hi}]: {power})"
            )
        lines.append(
            f"| {r['request_id'][:12]} | {_target(r)} | {r['parquet_rows_found']} | "
            f"{r['delta_log_hits']} | {r['stale_published_shards']} | {r['stale_checkpoints']} | "
            f"{'yes' if r['key_in_published_model'] else 'no'} | {nd} | {mp} | "
            f"{'yes' if r['passed'] else 'NO'} |"
        )
    lines += [
        "",
        "Functional check: the forgotten user's held-out items (validation + test) ranked "
        "from their training history. The original model uses its trained vector; the "
        "unlearned ensemble and the retrained reference have none and fold the history in. "
        "Exact unlearning should leave the unlearned model unaware of the user and close to "
        "the retrain.",
        "",
        "Membership: the probability that the user was trained on, from a black-box "
        "membership-inference attack (recunlearn.evidence.mia) whose shadow model was trained on "
        "retained users; exact unlearning should bring it down to a non-member's level. "
        "It is evidence, not a pass criterion: the attack's own held-out AUC says how much "
        "it can tell at all (against a sharded ensemble, usually little).",
        "",
    ]
    return "\n".join(lines)


def _target(r: dict[str, Any]) -> str:
    kind = r["details"].get("target_type", "user")
    if kind == "item":
        return f"item {r['details']['item_idx']}"
    key = f"{r['user_key'][:8]}..."
    return key if kind == "user" else f"{key} x item {r['details']['item_idx']}"
