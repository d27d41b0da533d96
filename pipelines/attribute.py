"""Attribute unlearning as ledger requests: per user or for everyone, applied to the published
sharded ensemble, and reversible.

Ledger rows (``target_type``):
- ``attribute``: edit the attribute out of one user's embeddings (``user_key``) or out of
  everyone's (``user_key = '*'``). ``completed`` once a published version carries the edit;
  ``reverted`` once an undo took it back (a new request re-opens it).
- ``attribute-undo``: take an edit back; ``completed`` once a version without it is published.

The published model is the unedited shard checkpoints plus an overlay of the edited users'
shard views (see ``recunlearn.attribute.edit.AttributeOverlay``); loading the ensemble stamps
the edited home vectors into the shard models, so what is served and exported is edited.
The overlay is recomputed from the unedited shards for every active edit whenever a version
is published: an undo drops the user from it (the original is then served exactly), a shard
retrained after a forget request gets its users' edits back, and a forgotten user's edit goes
with their data. The labels are read from the user file at run time and never stored.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Set
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyspark.sql import SparkSession

from pipelines.forget import VALID_ID, known_users, request_id_for
from pipelines.train import read_split_data
from recunlearn.attribute.edit import AttributeOverlay, edit_ensemble
from recunlearn.attribute.labels import attribute, labels_for_keys, read_user_attributes
from recunlearn.config import RunConfig
from recunlearn.data.pseudonym import secret_from_config, user_key
from recunlearn.errors import PipelineError
from recunlearn.seeding import make_seed
from recunlearn.serving import load_ensemble
from recunlearn.storage import checkpoints
from recunlearn.storage.joblock import holds_tables
from recunlearn.storage.layout import Layout, new_job_id, now_utc
from recunlearn.storage.ledger import (
    APPLIED,
    ATTRIBUTE,
    ATTRIBUTE_UNDO,
    PLANNED,
    RECEIVED,
    REJECTED,
    REVERTED,
    USER,
    ForgetLedger,
)
from recunlearn.storage.registry import ModelRegistry, publish_version
from recunlearn.storage.requests import FORGOTTEN_STATES, Request
from recunlearn.storage.versions import CheckpointMeta, Component, ModelVersion

log = logging.getLogger(__name__)

ALL_USERS = "*"
OVERLAY_COMPONENT = "attribute-overlay"
OPEN = (RECEIVED, PLANNED)  # an edit (or undo) request not yet applied
LIVE = (APPLIED, *OPEN)  # an edit request in these states is (or is to be) in effect


def users_file(cfg: RunConfig, layout: Layout) -> Path:
    if cfg.attribute.users_file:
        return Path(cfg.attribute.users_file)
    if cfg.dataset.path:
        p = Path(cfg.dataset.path)
        return p if p.is_dir() else p.parent
    return layout.raw / cfg.dataset.name


# --------------------------------------------------------------------------- intake
def submit_attribute_requests(
    spark: SparkSession | None,
    *,
    cfg: RunConfig,
    layout: Layout,
    secret: bytes,
    name: str,
    raw_ids: list[str] | None,
    undo: bool = False,
) -> list[dict[str, Any]]:
    """Record attribute edit (or undo) requests; ``raw_ids=None`` means every user. Through
    delta-rs only, as the other intakes (``spark`` is unused)."""
    attribute(name)  # unknown attribute: DataError before anything is written
    ledger = ForgetLedger(spark, layout.ledger)
    ledger.ensure()
    stamp = now_utc()
    existing = {r.request_id: r for r in ledger.requests()}
    outcomes, new_rows, updates, reopened = [], [], [], []
    targets: list[tuple[int, str | None, str | None]] = []  # (position, key, reason)
    given = [ALL_USERS] if raw_ids is None else raw_ids
    for pos, raw in enumerate(given):
        text = str(raw).strip()
        if raw_ids is None:
            targets.append((pos, ALL_USERS, None))
        elif not VALID_ID.match(text):
            targets.append((pos, None, "malformed user id"))
        else:
            targets.append((pos, user_key(secret, text), None))
    known = known_users(layout, sorted({k for _, k, _ in targets if k and k != ALL_USERS}))
    seen: set[str] = set()
    for pos, key, reason in targets:
        if key is None or (key != ALL_USERS and key not in known):
            reason = reason or "unknown user: no interactions under this key"
            key = key or user_key(secret, f"malformed:{str(given[pos]).strip()}")
            rid = request_id_for(f"{ATTRIBUTE}:{name}:rejected", key)
            if rid not in existing and rid not in seen:  # recorded once, with its reason
                new_rows.append(
                    {
                        "request_id": rid,
                        "target_type": ATTRIBUTE,
                        "attribute": name,
                        "user_key": key,
                        "status": REJECTED,
                        "reason": reason,
                        "received_at": stamp,
                        "updated_at": stamp,
                    }
                )
                seen.add(rid)
            outcomes.append(
                {
                    "position": pos,
                    "request_id": rid,
                    "outcome": "rejected",
                    "status": REJECTED,
                    "reason": reason,
                }
            )
            continue
        apply_id = request_id_for(f"{ATTRIBUTE}:{name}", key)
        current = existing.get(apply_id)
        if not undo:
            if apply_id in seen or (current and current.state in LIVE):
                outcomes.append(
                    {
                        "position": pos,
                        "request_id": apply_id,
                        "outcome": "duplicate",
                        "status": current.state if current else RECEIVED,
                    }
                )
            else:
                if current:  # reverted earlier: the same request id, reopened in place
                    reopened.append({"request_id": apply_id, "received_at": stamp, "reason": None})
                else:
                    new_rows.append(
                        {
                            "request_id": apply_id,
                            "target_type": ATTRIBUTE,
                            "attribute": name,
                            "user_key": key,
                            "status": RECEIVED,
                            "received_at": stamp,
                            "updated_at": stamp,
                        }
                    )
                outcomes.append(
                    {
                        "position": pos,
                        "request_id": apply_id,
                        "outcome": "accepted",
                        "status": RECEIVED,
                    }
                )
            seen.add(apply_id)
            continue
        if not current or current.state not in LIVE:
            outcomes.append(
                {
                    "position": pos,
                    "outcome": "rejected",
                    "reason": f"no active {name} edit for this user to undo",
                }
            )
            continue
        undo_id = request_id_for(ATTRIBUTE_UNDO, f"{apply_id}:{current.received_at}")
        if undo_id in existing or undo_id in seen:
            outcomes.append(
                {
                    "position": pos,
                    "request_id": undo_id,
                    "outcome": "duplicate",
                    "status": existing[undo_id].state if undo_id in existing else RECEIVED,
                }
            )
            continue
        seen.add(undo_id)
        if current.state in OPEN:  # never applied: nothing to take back from a model
            updates.append({"request_id": apply_id, "reason": "undone before it was applied"})
            new_rows.append(
                {
                    "request_id": undo_id,
                    "target_type": ATTRIBUTE_UNDO,
                    "attribute": name,
                    "user_key": key,
                    "status": APPLIED,
                    "received_at": stamp,
                    "updated_at": stamp,
                    "completed_at": stamp,
                    "reason": f"undo of {apply_id}",
                }
            )
            outcomes.append(
                {"position": pos, "request_id": undo_id, "outcome": "accepted", "status": APPLIED}
            )
        else:
            new_rows.append(
                {
                    "request_id": undo_id,
                    "target_type": ATTRIBUTE_UNDO,
                    "attribute": name,
                    "user_key": key,
                    "status": RECEIVED,
                    "received_at": stamp,
                    "updated_at": stamp,
                    "reason": f"undo of {apply_id}",
                }
            )
            outcomes.append(
                {"position": pos, "request_id": undo_id, "outcome": "accepted", "status": RECEIVED}
            )
    job_id = new_job_id("intake")
    ledger.append([{**r, "job_id": job_id} for r in new_rows])
    ledger.transition(reopened, RECEIVED, job_id=job_id)
    ledger.transition(updates, REVERTED, job_id=job_id)
    return outcomes


# --------------------------------------------------------------------------- what is in effect
def _undone_apply_id(request: Request) -> str:
    return (request.reason or "").removeprefix("undo of ")


def active_edits(requests: list[Request], *, forgotten: Set[str] = frozenset()) -> list[Request]:
    """The attribute requests that the next published version must carry: live apply
    requests, less those an open undo takes back and those of users being forgotten."""
    undoing = {
        _undone_apply_id(r) for r in requests if r.target == ATTRIBUTE_UNDO and r.state in OPEN
    }
    forgotten_done = {
        r.user_key for r in requests if r.target == USER and r.state in FORGOTTEN_STATES
    }
    return [
        r
        for r in requests
        if r.target == ATTRIBUTE
        and r.state in LIVE
        and r.request_id not in undoing
        and r.user_key not in forgotten
        and r.user_key not in forgotten_done
    ]


def build_overlay(
    cfg: RunConfig,
    layout: Layout,
    version: ModelVersion,
    edits: list[Request],
    *,
    job_id: str,
) -> tuple[Component | None, dict[str, str]]:
    """Edit the users of ``edits`` on the version's unedited shards; save the overlay.

    Returns the overlay as the version's component (None when nothing is edited) and, per
    request id whose user has no value for the attribute in the user file, the reason it cannot
    be applied."""
    if not edits:
        return None, {}
    t0 = time.perf_counter()
    ens = load_ensemble(version, fold_in_reg=cfg.aggregator.fold_in_reg, with_overlay=False)
    data = read_split_data(layout.interactions, version.table_version, version.n_items, None)
    people = read_user_attributes(users_file(cfg, layout))
    secret = secret_from_config(cfg.pseudonym, layout.root)
    unusable: dict[str, str] = {}
    stats: dict[str, Any] = {}
    for name in sorted({e.attribute for e in edits if e.attribute}):
        labels = labels_for_keys(people, name, data.user_keys, lambda r: user_key(secret, r))
        mine = [e for e in edits if e.attribute == name]
        if any(e.user_key == ALL_USERS for e in mine):
            targets = np.flatnonzero(labels >= 0)
        else:
            rows = np.searchsorted(data.user_keys, [e.user_key or "" for e in mine])
            rows = np.clip(rows, 0, len(data.user_keys) - 1)
            ok = []
            for e, r in zip(mine, rows, strict=True):
                if data.user_keys[r] == e.user_key and labels[r] >= 0:
                    ok.append(r)
                else:
                    unusable[e.request_id] = f"no {name} value for this user in the user file"
            targets = np.unique(np.array(ok, dtype=np.int64))
        if len(targets) == 0:
            continue
        overlay, st = edit_ensemble(
            ens,
            data.user_keys,
            data.train,
            labels,
            targets,
            cfg=cfg.attribute.edit,
            seed=make_seed(cfg.seed, "attribute", name),
        )
        ens.overlay = merge_overlays(ens.overlay, overlay)
        stats[name] = {
            "users": int(len(targets)),
            "seconds": st["seconds"],
            "mean_shift": st["mean_shift"],
        }
    if ens.overlay is None:
        return None, unusable
    applied = sorted(e.request_id for e in edits if e.request_id not in unusable)
    meta = CheckpointMeta(
        shard_id=None,
        delta_version=version.table_version,
        job_id=job_id,
        n_users=int(len(ens.overlay.keys)),
        extra={"edits": stats, "requests": applied},
    )
    saved = checkpoints.save(
        layout.checkpoints, OVERLAY_COMPONENT, job_id, ens.overlay.state(), meta
    )
    return Component.of(
        saved,
        users=int(len(ens.overlay.keys)),
        edits=stats,
        requests=applied,
        seconds=round(time.perf_counter() - t0, 3),
    ), unusable


def merge_overlays(a: AttributeOverlay | None, b: AttributeOverlay) -> AttributeOverlay:
    """``b`` over ``a`` (b's users win)."""
    if a is None:
        return b
    keys = np.concatenate([a.keys[~np.isin(a.keys, b.keys)], b.keys])
    views = torch.cat([a.views[torch.from_numpy(~np.isin(a.keys, b.keys))], b.views])
    order = np.argsort(keys)
    return AttributeOverlay(keys[order], views[torch.from_numpy(order)])


# --------------------------------------------------------------------------- the job step
@holds_tables("attribute")
def process_attribute_requests(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout
) -> dict[str, Any]:
    """Apply open attribute and undo requests to the published ensemble: one new version."""
    ledger = ForgetLedger(spark, layout.ledger)
    registry = ModelRegistry(layout)
    current = registry.current_version()
    if current is None:
        raise PipelineError(
            "attribute unlearning: no published model version; run `recunlearn train` first"
        )
    open_rows = ledger.open_requests((ATTRIBUTE, ATTRIBUTE_UNDO))
    ids = [r.request_id for r in open_rows]
    job_id = new_job_id("attribute")
    t0 = time.perf_counter()
    ledger.transition(
        [{"request_id": rid, "started_at": now_utc()} for rid in ids], PLANNED, job_id=job_id
    )
    try:
        rows = ledger.requests()
        edits = active_edits(rows)
        entry, unusable = build_overlay(cfg, layout, current, edits, job_id=job_id)
        version = registry.next_version()
        published = publish_version(
            registry,
            current.replace(
                version=version,
                created_at=now_utc().isoformat(),
                parent=current.version,
                attribute_overlay=entry,
                job_id=job_id,
            ),
            request_ids=ids,
            note=f"attribute edits: {len(edits)} active request(s)",
            prune=lambda m: m["run_id"] if m["component"] == OVERLAY_COMPONENT else None,
            retire=f"superseded by v{version}",
        )
        removed = published.removed
    except Exception as exc:
        ledger.note_error(ids, job_id=job_id, error=exc)
        raise
    done = now_utc()
    by_id = {r.request_id: r for r in rows}
    updates: list[dict[str, Any]] = []
    for rid in ids:
        r = by_id[rid]
        if rid in unusable:
            updates.append(
                {
                    "request_id": rid,
                    "state": REJECTED,
                    "reason": unusable[rid],
                    "completed_at": None,
                    "model_version": None,
                    "evidence": None,
                }
            )
            continue
        overlay = entry.extra if entry is not None else {}
        evidence = {
            "edit": overlay.get("edits", {}).get(r.attribute),
            "overlay_users": overlay.get("users", 0),
        }
        updates.append(
            {
                "request_id": rid,
                "state": APPLIED,
                "reason": r.reason,
                "completed_at": done,
                "model_version": version,
                "evidence": json.dumps(evidence),
            }
        )
        if r.target == ATTRIBUTE_UNDO:
            updates.append(
                {
                    "request_id": _undone_apply_id(r),
                    "state": REVERTED,
                    "reason": f"undone by {rid} in v{version}",
                    "completed_at": (
                        undone.completed_at if (undone := by_id.get(_undone_apply_id(r))) else None
                    ),
                    "model_version": version,
                    "evidence": json.dumps({"undone_by": rid}),
                }
            )
    for state in (
        REJECTED,
        APPLIED,
        REVERTED,
    ):  # an apply undone in the same batch: applied, then reverted
        ledger.transition(
            [{k: v for k, v in u.items() if k != "state"} for u in updates if u["state"] == state],
            state,
            job_id=job_id,
        )
    result = {
        "job_id": job_id,
        "requests": ids,
        "model_version": version,
        "active_edits": len(edits),
        "overlay_users": entry.extra["users"] if entry is not None else 0,
        "rejected": sorted(unusable),
        "overlays_removed": removed,
        "end_to_end_seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "attribute %s: published v%d with %d edited user(s)",
        job_id,
        version,
        result["overlay_users"],
    )
    return result
