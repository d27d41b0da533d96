"""The fast tier of the unlearn job, and the policy that schedules the exact tier.

A fast run answers the open requests (users, items, single interactions) at once: the shards
holding their data are recorded, the rows are deleted and vacuumed exactly as on the exact path
(the data obligation does not wait), and each touched shard model is updated in place by a
fast method
(``recunlearn.fast.bpr``: ``scif``, ``influence``, ``finetune`` or ``ascent``) from the rows it
was trained on, read just before the delete and held in memory only. The new version is
published with an *approximate* guarantee and a ``pending_exact`` record (shards, requests,
rows removed per shard); the checkpoints the updates started from, and the reference model,
held the forgotten rows and are deleted. Requests get status ``approximate`` and guarantee
``approximate:<method>``.

The exact tier (``pipelines.unlearn`` with method ``exact``) later retrains every pending shard
from scratch, refits the aggregator, retrains the reference and sets the requests
``completed`` with guarantee ``exact``. :func:`exact_due` decides when: enough approximate
requests, the oldest one past its deadline, or a shard whose fast-removed rows exceed a share
of its training rows (the drift of a model that was not retrained).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta, timezone
from typing import Any

import numpy as np
import scipy.sparse as sp
from pyspark.sql import SparkSession

from recunlearn import checkpoints
from recunlearn.config import EXACT_UPDATES, RunConfig, fingerprint
from recunlearn.errors import PipelineError
from recunlearn.fast.bpr import METHODS, BPRUnlearner
from recunlearn.models.base import lookup_rows
from recunlearn.models import load_model
from recunlearn.models.data import InteractionData
from recunlearn.seeding import make_seed
from recunlearn.tables import (APPROXIMATE, DATA_TARGETS, PLANNED, RECEIVED, RETRAINED, ForgetLedger, Layout,
                               ModelRegistry, delta_version, now_utc)
from recunlearn.logs import context
from pipelines.train import build_manifest, n_items_of, new_job_id, read_split_data
from pipelines.unlearn import _Clock, delete_and_vacuum, determine_targets, publish_and_clean, verify_requests

log = logging.getLogger(__name__)

APPROXIMATE_GUARANTEE = (
    "approximate ({method}): the forgotten rows are deleted and vacuumed; the shard models that "
    "held them were updated in place by {method} and are not yet retrained; the exact retrain of "
    "shards {shards} is pending (see pending_exact)"
)


EXACT_UPDATE_GUARANTEE = (
    "exact ({method}, model-specific): the forgotten rows are deleted and vacuumed, and every shard "
    "that held them, and the reference, was updated to the model of the retained data: {detail}"
)
EXACT_DETAIL = {
    "knn": "the item-kNN index equals, bit for bit, the index rebuilt without the rows",
    "ease": "EASE's Gram matrix counts only the retained rows and its inverse was updated by "
            "Woodbury to the refit's to float64 round-off",
    "als": "the WMF factors re-converged from the current ones until every row's normal equations "
           "on the retained data hold to the training tolerance (a retrain from scratch meets the "
           "same test; it differs from this model as much as a retrain with another seed does)",
}


def unlearn_fast(spark: SparkSession, *, cfg: RunConfig, layout: Layout, method: str) -> dict[str, Any]:
    if method not in METHODS and method not in EXACT_UPDATES:
        raise PipelineError(f"unknown unlearning method {method!r}: exact or one of "
                            f"{', '.join((*METHODS, *EXACT_UPDATES))}")
    want = EXACT_UPDATES.get(method, "bpr")
    if cfg.model.kind != want:
        raise PipelineError(f"unlearn --method {method} updates {want} models; this deployment "
                            f"trains {cfg.model.kind} (model.kind)")
    ledger = ForgetLedger(spark, layout.ledger)
    # a request deleted by a stopped exact run is left to the exact path: its rows, which an
    # approximate update needs, are gone
    requests = [r for r in ledger.open_requests(DATA_TARGETS) if r["status"] in (RECEIVED, PLANNED)]
    if not requests:
        return {"requests": [], "status": "nothing to do", "method": method}
    registry = ModelRegistry(spark, layout)
    current = registry.current()
    if current is None:
        raise PipelineError("unlearn: no published model version; run `recunlearn train` first")
    manifest = json.loads(open(current["manifest"]).read())
    if manifest.get("attribute_overlay"):
        raise PipelineError("unlearn --method %s: attribute edits are in effect; the fast tier does "
                            "not rebuild them, run `recunlearn unlearn --method exact`" % method)
    job_id = new_job_id(f"fast-{method}")
    ids = [r["request_id"] for r in requests]
    clock = _Clock()
    clock.job_id = job_id
    try:
        return _run_fast(spark, cfg=cfg, layout=layout, ledger=ledger, registry=registry,
                         current=current, manifest=manifest, requests=requests, job_id=job_id,
                         method=method, clock=clock)
    except Exception as exc:
        ledger.note_error(ids, job_id=job_id, error=exc)
        raise


def _aligned(keys: np.ndarray, m: np.ndarray | Any, data: InteractionData) -> sp.csr_matrix:
    """``data``'s rows for ``keys`` (the model's users, in its row order); empty where absent."""
    pos = lookup_rows(data.user_keys, keys)
    have = np.flatnonzero(pos >= 0)
    sel = sp.csr_matrix((np.ones(len(have), np.float32), (have, pos[have])), shape=(len(keys), data.n_users))
    return (sel @ m).tocsr()


def _run_fast(spark: SparkSession, *, cfg: RunConfig, layout: Layout, ledger: ForgetLedger,
              registry: ModelRegistry, current: dict[str, Any], manifest: dict[str, Any],
              requests: list[dict[str, Any]], job_id: str, method: str, clock: _Clock) -> dict[str, Any]:
    t_start = time.perf_counter()
    ids = [r["request_id"] for r in requests]
    n_items = n_items_of(layout)
    with clock.step("target_determination"):
        targets = determine_targets(spark, layout, ledger, requests, job_id)
    touched = targets.touched
    # each touched shard's rows before the delete, in memory only: the update needs them
    with clock.step("read_shards"):
        version_before = delta_version(spark, layout.interactions)
        shard_data = {k: read_split_data(layout.interactions, version_before, n_items, k)
                      for k in touched} if method not in EXACT_UPDATES else {}
    delete_version, _ = delete_and_vacuum(spark, cfg=cfg, layout=layout, ledger=ledger, job_id=job_id,
                                          targets=targets, clock=clock)
    shards = {int(k): dict(v) for k, v in manifest["shards"].items()}
    pending = dict(manifest.get("pending_exact") or {})
    removed_rows = {int(k): v for k, v in (pending.get("removed_rows") or {}).items()}
    updates: dict[int, dict[str, Any]] = {}
    exact = method in EXACT_UPDATES
    reference = manifest.get("reference") if exact else None
    with clock.step("fast_update"):
        for k in [*touched, *(["reference"] if reference else [])]:
            base = reference if k == "reference" else manifest["shards"][str(k)]
            state = checkpoints.load_state(base["path"])
            if state.get("kind", "bpr") != cfg.model.kind:
                raise PipelineError(f"the published {k} model is {state.get('kind', 'bpr')}, the config "
                                    f"says model.kind={cfg.model.kind}: train again after changing it")
            model = load_model(state)
            if exact:
                infos = _apply_exact(model, targets)
            else:
                data = shard_data[k]
                un = BPRUnlearner(model, _aligned(model.user_keys, data.train, data), cfg.unlearn.fast,
                                  reg=cfg.model.reg, holdout=_aligned(model.user_keys, data.valid, data),
                                  seed=make_seed(cfg.seed, "fast", job_id, k) % 2**31)
                infos = _apply(un, targets, method)
            pairs = sum(i["pairs"] for i in infos)
            seconds = round(sum(i["seconds"] for i in infos), 4)
            meta = {"shard_id": None if k == "reference" else k, "table": "interactions",
                    "config_fingerprint": base.get("config_fingerprint"), "seed": base.get("seed"),
                    "job_id": job_id, "created_at": now_utc().isoformat(), "fit_seconds": seconds,
                    "epochs": 0, "valid_ndcg": base.get("valid_ndcg"), "n_users": len(model.user_keys),
                    "n_train": int(base.get("n_train") or 0) - pairs, "update_of": base.get("sha256")}
            if exact:  # the model of the rows at the delete version, as a retrain would give
                meta["delta_version"] = delete_version
                meta["exact_update"] = method
            else:
                # trained on the rows at delta_version, then had the forgotten rows taken out
                # approximately; the audit treats it as trained at delta_version
                removed_rows[k] = removed_rows.get(k, 0) + pairs
                meta["delta_version"] = base["delta_version"]
                meta["approximate"] = {"method": method, "applied_at_version": delete_version,
                                       "fast_config": fingerprint(cfg.unlearn.fast)}
            component = "reference" if k == "reference" else checkpoints.shard_component(k)
            saved = checkpoints.save(layout.checkpoints, component,
                                     f"{job_id}-{uuid.uuid4().hex[:6]}", model.state(), meta)
            if k == "reference":
                reference = saved
                continue
            shards[k] = saved
            updates[k] = {"pairs": pairs, "seconds": seconds,
                          "steps": [{f: i.get(f) for f in ("kind", "pairs", "users", "rounds",
                                                           "index_rows_recomputed", "cg_iterations",
                                                           "cg_residual", "steps", "stopped",
                                                           "block_users", "block_items", "terms")
                                     if f in i} for i in infos]}
    with clock.step("manifest"):
        version = registry.next_version()
        pend_shards = sorted(set(pending.get("shards", [])) | set(touched))
        guarantee = (EXACT_UPDATE_GUARANTEE.format(method=method, detail=EXACT_DETAIL[method]) if exact
                     else APPROXIMATE_GUARANTEE.format(method=method, shards=pend_shards))
        new_manifest = build_manifest(
            version=version, cfg=cfg, shards=shards, aggregator=manifest["aggregator"],
            reference=reference, table_version=delete_version, n_items=n_items,
            partition=manifest.get("partition"), guarantee=guarantee)
        new_manifest["parent"] = current["version"]
        new_manifest["unlearn_job"] = job_id
    if not exact:
        new_manifest["pending_exact"] = {
            "shards": pend_shards, "aggregator": manifest["aggregator"].get("kind") != "mean",
            "requests": sorted(set(pending.get("requests", [])) | set(ids)),
            "removed_rows": {str(k): v for k, v in sorted(removed_rows.items())},
            "since": pending.get("since") or now_utc().isoformat(), "method": method}
    # the checkpoints the updates started from, and the reference, hold the forgotten rows
    published_at, removed = publish_and_clean(
        registry, layout, new_manifest, parent=current["version"], ids=ids, touched=touched,
        delete_version=delete_version, clock=clock,
        note=f"fast ({method}): {len(ids)} request(s), updated shards {touched}")
    ledger.transition([{
        "request_id": r["request_id"], "published_at": published_at, "model_version": version,
        "guarantee": f"{'exact' if exact else 'approximate'}:{method}",
        "evidence": json.dumps({"method": method, "shards": {
            str(k): updates[k] for k in targets.shards_of[r["request_id"]] if k in updates}}),
    } for r in requests], RETRAINED if exact else APPROXIMATE, job_id=job_id)
    verification = None
    if exact:  # an exact update is audited like a retrain
        with clock.step("verify"):
            verification = verify_requests(spark, layout=layout, request_ids=ids, job_id=job_id)
    result = {"job_id": job_id, "method": method, "requests": ids, "shards_touched": touched,
              "delete_version": delete_version, "model_version": version,
              "parent_version": current["version"], "guarantee": "exact" if exact else "approximate",
              "checkpoints_removed": removed, "updates": {str(k): v for k, v in updates.items()},
              "steps_seconds": clock.steps, "verification": verification,
              "end_to_end_seconds": round(time.perf_counter() - t_start, 3)}
    log.info("unlearn %s: published v%d (%s, %s) in %.1fs", job_id, version, result["guarantee"],
             method, result["end_to_end_seconds"],
             extra=context(job_id=job_id, request_ids=ids, shards=touched, model_version=version))
    return result


def _apply_exact(model: Any, targets: Any) -> list[dict[str, Any]]:
    """The model-specific exact update (WMF, item-kNN or EASE) of one model for the targets."""
    out = []
    steps = (("users", targets.users, lambda: model.forget_users(np.array(targets.users))),
             ("items", targets.items, lambda: model.forget_items(np.array(targets.items))),
             ("interactions", targets.pairs, lambda: _pairs(model, targets.pairs)))
    for kind, wanted, call in steps:
        if wanted:
            t0, before = time.perf_counter(), _nnz(model)
            info = dict(call())
            out.append({"kind": kind, **info, "pairs": before - _nnz(model),
                        "seconds": time.perf_counter() - t0})
    return out


def _nnz(model: Any) -> int:
    """Training interactions a WMF, item-kNN or EASE model holds."""
    return int(model.users.m.nnz if hasattr(model, "users") else model.x.nnz)


def _pairs(model: Any, pairs: list[tuple[str, int]]) -> dict[str, Any]:
    rows = model.rows_of(np.array([k for k, _ in pairs]))
    items = np.array([i for _, i in pairs])
    held = rows >= 0
    return model.forget_pairs(rows[held], items[held])


def _apply(un: BPRUnlearner, targets: Any, method: str) -> list[dict[str, Any]]:
    """The targets' updates to one shard model: users, then items, then single interactions
    (a target the shard does not hold changes nothing)."""
    out = []
    if targets.users:
        out.append({"kind": "users", **un.forget_users(np.array(targets.users), method)})
    if targets.items:
        out.append({"kind": "items", **un.forget_items(np.array(targets.items), method)})
    if targets.pairs:
        rows = un.model.rows_of(np.array([k for k, _ in targets.pairs]))
        items = np.array([i for _, i in targets.pairs])
        held = rows >= 0
        out.append({"kind": "interactions", **un.forget_pairs(rows[held], items[held], method)})
    return out


def exact_due(spark: SparkSession, *, cfg: RunConfig, layout: Layout) -> tuple[bool, str]:
    """Whether the exact retrain of the fast-answered requests is due, and why."""
    policy = cfg.unlearn.policy
    rows = ForgetLedger(spark, layout.ledger).rows((APPROXIMATE,))
    if not rows:
        return False, "no request has an approximate guarantee"
    if len(rows) >= policy.max_pending:
        return True, f"{len(rows)} approximate requests >= max_pending {policy.max_pending}"
    # Spark hands timestamps back as naive local times: astimezone reads them as such
    oldest = min(r["published_at"] or r["updated_at"] for r in rows).astimezone(timezone.utc)
    if now_utc() - oldest >= timedelta(hours=policy.deadline_hours):
        return True, f"oldest approximate request is older than {policy.deadline_hours} h"
    manifest = ModelRegistry(spark, layout).current_manifest() or {}
    pending = manifest.get("pending_exact") or {}
    for k, n in (pending.get("removed_rows") or {}).items():
        n_train = manifest["shards"][k].get("n_train") or 0
        share = n / max(n + n_train, 1)
        if share >= policy.max_share:
            return True, f"shard {k}: {share:.3f} of its rows removed approximately >= max_share {policy.max_share}"
    return False, (f"{len(rows)} approximate request(s), within max_pending, deadline and "
                   "max_share")
