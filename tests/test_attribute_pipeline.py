"""Attribute requests through the ledger on real Spark + Delta, Ray and torch: per-user edits
published as a new version, an undo that restores the original exactly, and edits that
survive (or leave with) a later forget request."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_ml100k

from pipelines import unlearn as unlearn_mod
from pipelines.attribute import OVERLAY_COMPONENT, submit_attribute_requests
from pipelines.forget import submit_user_requests
from recunlearn.data.pseudonym import user_key
from recunlearn.serving import load_ensemble
from recunlearn.storage import checkpoints
from recunlearn.storage.ledger import ForgetLedger
from recunlearn.storage.registry import ModelRegistry

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e]
SECRET = b"test-secret-key-0123456789"


@pytest.fixture()
def attr_cfg(cfg, tmp_path, trained):
    """The trained deployment, and a u.user file beside its log: group 0 is all F."""
    raw, _ = trained
    groups = write_ml100k(tmp_path / "again")  # the same log: its groups
    assert (tmp_path / "again" / "u.data").read_text() == (raw / "u.data").read_text()
    lines = []
    for g, users in groups.items():
        for u in users:
            lines.append(f"{u}|{20 + 3 * (u % 12)}|{'F' if g == '0' else 'M'}|other|00000")
    (raw / "u.user").write_text("\n".join(sorted(lines, key=lambda s: int(s.split("|")[0]))) + "\n")
    attribute = cfg.attribute.model_copy(
        update={"users_file": str(raw), "edit": cfg.attribute.edit.model_copy(update={"steps": 40})}
    )
    return cfg.model_copy(update={"attribute": attribute}), raw


def _served_and_base(manifest):
    return load_ensemble(manifest), load_ensemble(manifest, with_overlay=False)


def _home_rows_equal(served, base, keys, equal: bool) -> None:
    for s, b in zip(served.shards, base.shards, strict=True):
        rows = s.rows_of(np.asarray(keys))
        rows = rows[rows >= 0]
        if len(rows):
            same = torch.equal(s.user[torch.from_numpy(rows)], b.user[torch.from_numpy(rows)])
            assert same == equal


def test_attribute_requests_apply_undo_and_survive_a_forget(spark, attr_cfg, layout):
    cfg, raw = attr_cfg
    registry = ModelRegistry(layout)
    ledger = ForgetLedger(spark, layout.ledger)
    asked = ["3", "7", "11", "20"]
    keys = sorted(user_key(SECRET, u) for u in asked)

    out = submit_attribute_requests(
        spark,
        cfg=cfg,
        layout=layout,
        secret=SECRET,
        name="gender",
        raw_ids=asked + ["7", "no-such-user", "bad id;"],
    )
    assert [o["outcome"] for o in out] == ["accepted"] * 4 + ["duplicate", "rejected", "rejected"]
    res = unlearn_mod.unlearn(spark, cfg=cfg, layout=layout)
    v2 = registry.current_version()
    assert res["model_version"] == v2.version == 2 and res["overlay_users"] == 4
    rows = {r["user_key"]: r for r in ledger.rows() if r["target_type"] == "attribute"}
    assert {
        k: (r["status"], r["attribute"], r["model_version"]) for k, r in rows.items() if k in keys
    } == {k: ("applied", "gender", 2) for k in keys}
    rejected = sorted(r["reason"] for r in rows.values() if r["status"] == "rejected")
    assert rejected == ["malformed user id", "unknown user: no interactions under this key"]
    served, base = _served_and_base(v2)
    others = [
        k
        for k in base.shards[0].user_keys.tolist()
        + base.shards[1].user_keys.tolist()
        + base.shards[2].user_keys.tolist()
        if k not in keys
    ]
    _home_rows_equal(served, base, keys, equal=False)
    _home_rows_equal(served, base, others, equal=True)

    # Undo one user's edit: it is served exactly as trained again; the others keep theirs.
    undo = submit_attribute_requests(
        spark, cfg=cfg, layout=layout, secret=SECRET, name="gender", raw_ids=["7"], undo=True
    )
    assert undo[0]["outcome"] == "accepted"
    again = submit_attribute_requests(
        spark, cfg=cfg, layout=layout, secret=SECRET, name="gender", raw_ids=["7"], undo=True
    )
    assert again[0]["outcome"] == "duplicate"
    unlearn_mod.unlearn(spark, cfg=cfg, layout=layout)
    v3 = registry.current_version()
    served, base = _served_and_base(v3)
    k7 = user_key(SECRET, "7")
    _home_rows_equal(served, base, [k7], equal=True)
    _home_rows_equal(served, base, [k for k in keys if k != k7], equal=False)
    states = {r["request_id"]: r for r in ledger.rows()}
    undo_row = states[undo[0]["request_id"]]
    assert undo_row["status"] == "applied" and undo_row["model_version"] == 3
    assert {
        r["user_key"]: r["status"]
        for r in states.values()
        if r["target_type"] == "attribute" and r["status"] != "rejected"
    }[k7] == "reverted"

    # Forget an edited user entirely: the edit goes with them; the rest are re-applied on
    # the retrained shards, and only the newest overlay stays on disk.
    submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=["3"])
    unlearn_mod.unlearn(spark, cfg=cfg, layout=layout)
    v4 = registry.current_version()
    k3 = user_key(SECRET, "3")
    overlay = v4.attribute_overlay
    assert overlay.extra["users"] == 2 and k3 not in json.dumps(overlay.extra)
    served, base = _served_and_base(v4)
    assert sorted(served.overlay.keys.tolist()) == sorted(k for k in keys if k not in (k3, k7))
    _home_rows_equal(served, base, [k for k in keys if k not in (k3, k7)], equal=False)
    on_disk = [
        m for m in checkpoints.all_metas(layout.checkpoints) if m["component"] == OVERLAY_COMPONENT
    ]
    assert [m["path"] for m in on_disk] == [overlay.path]
