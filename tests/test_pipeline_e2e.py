"""The exact path end to end on real Spark + Delta, real Ray and real torch, on a small
synthetic log: ingest -> partition -> train -> forget -> unlearn -> audit, plus the replay
check (the unlearned shard equals a from-scratch retrain without the user) and a crash in
the middle of an unlearn job that a second run completes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines import unlearn as unlearn_mod
from pipelines.audit import audit
from pipelines.forget import submit_user_requests
from pipelines.ingest import ingest
from pipelines.train import n_items_of, read_split_data, torch_setup
from recunlearn.data.pseudonym import user_key
from recunlearn.evidence.scan import delta_log_hits, rows_with_keys
from recunlearn.models.bpr import BPRMF, fit_bpr
from recunlearn.seeding import make_seed
from recunlearn.storage import checkpoints
from recunlearn.storage.checkpoints import shard_component
from recunlearn.storage.ledger import ForgetLedger
from recunlearn.storage.registry import ModelRegistry

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e]
SECRET = b"test-secret-key-0123456789"


def test_forget_unlearn_audit_and_replay(spark, cfg, layout, trained):
    raw, part = trained
    assert max(part["sizes"]) - min(part["sizes"]) <= 1
    registry = ModelRegistry(layout)
    v1 = registry.current_version()
    forget = ["5", "17"]
    keys = sorted(user_key(SECRET, u) for u in forget)
    # What the shards held before: the replay check retrains from this minus the users.
    n_items = n_items_of(layout)
    before = {
        k: read_split_data(layout.interactions, v1.table_version, n_items, k)
        for k in range(cfg.sharding.n_shards)
    }
    homes = sorted({k for k, d in before.items() for key in keys if key in set(d.user_keys)})

    out = submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=forget)
    assert [o["outcome"] for o in out] == ["accepted", "accepted"]
    result = unlearn_mod.unlearn(spark, cfg=cfg, layout=layout)
    assert result["shards_touched"] == homes
    v2 = registry.current_version()
    assert v2.version == 2 and v2.parent == 1

    # ledger: verified, with shards, delete version and the new model version
    rows = {r["user_key"]: r for r in ForgetLedger(spark, layout.ledger).rows()}
    for key in keys:
        r = rows[key]
        assert r["status"] == "verified" and r["model_version"] == 2
        assert [h["state"] for h in r["history"]] == [
            "received",
            "planned",
            "deleted",
            "retrained",
            "verified",
        ]
        assert r["delete_version"] == v2.table_version and r["shards"]
        assert r["deleted_at"] <= r["published_at"] <= r["completed_at"]
        ev = json.loads(r["evidence"])
        assert ev["known_to_original"] is True and ev["known_to_unlearned"] is False

    # storage: no row left in any Parquet file, no key or raw id in any _delta_log
    assert rows_with_keys(layout.tables, keys) == {k: 0 for k in keys}
    assert delta_log_hits(layout.tables, keys=keys, raw_ids=forget) == {}

    # models: touched shards retrained after the delete, untouched ones reused as they were
    for k in range(cfg.sharding.n_shards):
        new, old = v2.shards[k], v1.shards[k]
        if k in homes:
            assert new.delta_version == v2.table_version and new.path != old.path
        else:
            assert new.path == old.path
    assert not any(
        m["exists"]
        and m["delta_version"] < v2.table_version
        and (m["shard_id"] is None or m["shard_id"] in homes)
        for m in checkpoints.all_metas(layout.checkpoints)
    )
    assert [v["status"] for v in registry.versions()] == ["retired", "published"]

    # replay: each unlearned shard equals a from-scratch retrain without the users, same seed
    torch_setup(cfg.train.threads_per_task, cfg.train.deterministic)
    for k in homes:
        retained = before[k].without_users(np.array(keys))
        seed = make_seed(cfg.seed, "model", shard_component(k))
        expect, _ = fit_bpr(retained, cfg.model, seed=seed)
        got = BPRMF.load(v2.shards[k].path)
        assert list(got.user_keys) == list(expect.user_keys)
        assert torch.equal(got.user, expect.user) and torch.equal(got.item, expect.item)
        assert torch.equal(got.bias, expect.bias)
        assert not set(keys) & set(got.user_keys)

    # audit agrees, with the raw ids checked in the logs
    report = audit(spark, layout=layout, secret=SECRET, raw_ids=forget)
    assert report["passed"] and report["n_requests"] == 2 and report["raw_ids_checked"] == 2
    assert (layout.reports / "audit.md").read_text().count("| yes |") == 2
    # the completeness evidence is stored with each request: functional and membership
    for r in report["requests"]:
        m = r["details"]["membership"]
        assert 0.0 <= m["original"] <= 1.0 and 0.0 <= m["unlearned"] <= 1.0
        assert 0.0 <= m["attack_shadow_auc"] <= 1.0
        assert r["details"]["functional"]["known_to_original"] is True
        assert r["details"]["functional"]["known_to_unlearned"] is False

    # a re-ingest of the same raw log must not bring the forgotten users back
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET)
    assert rows_with_keys(layout.tables, keys) == {k: 0 for k in keys}


def test_crash_mid_unlearn_keeps_model_and_next_run_completes(
    spark, cfg, layout, trained, monkeypatch
):
    # This run refits the attention aggregator (the other test uses the mean).
    cfg = cfg.model_copy(
        update={"aggregator": cfg.aggregator.model_copy(update={"kind": "attention"})}
    )
    registry = ModelRegistry(layout)
    submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=["8"])

    def boom(*a, **kw):
        raise RuntimeError("worker lost during aggregator refit")

    monkeypatch.setattr(unlearn_mod, "fit_aggregator", boom)
    with pytest.raises(RuntimeError, match="aggregator refit"):
        unlearn_mod.unlearn(spark, cfg=cfg, layout=layout)
    [row] = ForgetLedger(spark, layout.ledger).rows()
    # the request keeps the state it reached (deleted: the delete and VACUUM went through)
    assert row["status"] == "deleted" and "aggregator refit" in row["reason"]
    assert row["shards"] and row["delete_version"] is not None  # recorded before the crash
    assert registry.current()["version"] == 1  # nothing half-done was published

    monkeypatch.undo()
    result = unlearn_mod.unlearn(spark, cfg=cfg, layout=layout)
    assert result["shards_touched"] == row["shards"]  # from the ledger: the map row is gone
    [row] = ForgetLedger(spark, layout.ledger).rows()
    assert (
        row["status"] == "verified" and registry.current()["version"] == 2 and row["reason"] is None
    )
    assert audit(spark, layout=layout, secret=SECRET, raw_ids=["8"])["passed"]
    assert registry.current_version().aggregator.kind == "attention"
