"""Attribute unlearning, pure parts: labels, the attacker, the embedding edit (full scope,
per-user scope, undo) and the ensemble overlay, on embeddings with a planted attribute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recunlearn.attribute.attack import attack, fit_attacker, score_attacker
from recunlearn.attribute.edit import AttributeOverlay, edit_ensemble, edit_model, undo_model
from recunlearn.attribute.labels import encode, labels_for_keys, read_user_attributes
from recunlearn.config import AttributeEditConfig
from recunlearn.data.split import split_pairs
from recunlearn.errors import DataError
from recunlearn.models.bpr import BPRMF
from recunlearn.sharding.ensemble import MeanAggregator, ShardedEnsemble, shard_views

FAST = AttributeEditConfig(steps=200, w_reg=0.3)


def planted(n: int = 1200, d: int = 16, n_items: int = 60, seed: int = 0, strength: float = 1.2):
    """A BPR-MF model whose user vectors carry a binary attribute along a few directions."""
    g = torch.Generator().manual_seed(seed)
    y = np.random.default_rng(seed).integers(0, 2, n)
    user = torch.randn(n, d, generator=g) * 0.5
    user[:, :3] += torch.from_numpy(np.where(y == 1, strength, -strength)).float()[:, None] * 0.5
    item = torch.randn(n_items, d, generator=g) * 0.5
    keys = np.array([f"k{i:05d}" for i in range(n)])
    return BPRMF(keys, user, item, torch.zeros(n_items)), y


def top_overlap(a: BPRMF, b: BPRMF, k: int = 10) -> float:
    rows = np.arange(len(a.user_keys))
    ta = torch.topk(a.score(rows), k).indices.numpy()
    tb = torch.topk(b.score(rows), k).indices.numpy()
    return float(np.mean([len(set(x) & set(z)) / k for x, z in zip(ta, tb, strict=True)]))


def test_labels_from_both_movielens_formats(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "u.user").write_text(
        "1|24|M|technician|85711\n2|53|F|other|94043\n3|30|M|writer|1\n"
    )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "users.dat").write_text(
        "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
    )
    a, b = read_user_attributes(tmp_path / "a"), read_user_attributes(tmp_path / "b")
    assert encode(a, "gender").tolist() == [0, 1, 0] and encode(a, "age").tolist() == [0, 2, 1]
    assert encode(b, "gender").tolist() == [1, 0, 0] and encode(b, "age").tolist() == [0, 2, 1]
    lab = labels_for_keys(a, "gender", np.array(["k2", "k9"]), lambda r: f"k{r}")
    assert lab.tolist() == [1, -1]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "u.user").write_text("1|24|X|technician|85711\n")
    with pytest.raises(DataError, match="gender outside M/F"):
        read_user_attributes(tmp_path / "c")
    (tmp_path / "c" / "u.user").write_text("1|24|M\n")
    with pytest.raises(DataError, match="without 5 fields"):
        read_user_attributes(tmp_path / "c")


def test_attacker_finds_a_planted_attribute_and_not_noise():
    model, y = planted()
    found = attack(model.user.numpy(), y, kind="mlp", seed=0, bootstrap=100)
    assert found["balanced_accuracy"] > 0.8 and found["balanced_accuracy_ci"][0] > 0.5
    noise = np.random.default_rng(1).normal(size=(1200, 16))
    none = attack(noise, y, kind="gbm", seed=0, bootstrap=100)
    assert abs(none["balanced_accuracy"] - 0.5) < 0.07 and none["auc_ci"][0] < 0.5


def test_edit_for_everyone_hides_the_attribute_and_keeps_rankings():
    model, y = planted(n=900)
    targets = np.arange(len(y))
    edited, undo, stats = edit_model(model, y, targets, cfg=FAST, seed=3)
    for kind in ("mlp", "gbm"):
        after = attack(edited.user.numpy(), y, kind=kind, seed=0, bootstrap=0)
        assert after["balanced_accuracy"] < 0.62, (kind, after)
    assert top_overlap(model, edited) > 0.6
    assert torch.equal(edited.item, model.item) and torch.equal(edited.bias, model.bias)
    restored = undo_model(edited, undo)
    assert torch.equal(restored.user, model.user)


def test_per_user_scope_edits_only_the_users_who_asked():
    model, y = planted(n=1200)
    asked = np.sort(np.random.default_rng(5).choice(len(y), 250, replace=False))
    rest = np.setdiff1d(np.arange(len(y)), asked)
    edited, undo, _ = edit_model(model, y, asked, cfg=FAST, seed=3)
    assert torch.equal(edited.user[torch.from_numpy(rest)], model.user[torch.from_numpy(rest)])
    assert not torch.equal(
        edited.user[torch.from_numpy(asked)], model.user[torch.from_numpy(asked)]
    )
    clf = fit_attacker(model.user.numpy()[rest], y[rest], kind="mlp", seed=0)
    before = score_attacker(clf, model.user.numpy()[asked], y[asked], n_classes=2, bootstrap=0)
    after = score_attacker(clf, edited.user.numpy()[asked], y[asked], n_classes=2, bootstrap=0)
    assert before["balanced_accuracy"] > 0.8
    assert abs(after["balanced_accuracy"] - 0.5) < 0.1, after
    assert torch.equal(undo_model(edited, undo).user, model.user)


def test_edit_refuses_users_without_a_label_and_needs_scores_in_function_space():
    model, y = planted(n=200)
    y = y.copy()
    y[0] = -1
    with pytest.raises(ValueError, match="known attribute value"):
        edit_model(model, y, np.array([0, 1]), cfg=FAST, seed=0)


def test_ensemble_overlay_edits_only_its_users_and_round_trips():
    model, y = planted(n=400, n_items=40)
    half = len(y) // 2
    shards = [
        BPRMF(model.user_keys[:half], model.user[:half], model.item, model.bias),
        BPRMF(model.user_keys[half:], model.user[half:], model.item * 0.9, model.bias),
    ]
    ens = ShardedEnsemble(shards, MeanAggregator())
    rng = np.random.default_rng(0)
    hist = sp.csr_matrix((rng.random((len(y), 40)) < 0.15).astype(np.float32))
    targets = np.arange(0, len(y), 4)
    overlay, _ = edit_ensemble(
        ens, model.user_keys, hist, y, targets, cfg=FAST.model_copy(update={"steps": 50}), seed=0
    )
    assert list(overlay.keys) == sorted(model.user_keys[targets])
    edited = ShardedEnsemble(shards, MeanAggregator(), overlay=overlay)
    others = np.setdiff1d(np.arange(len(y)), targets)
    keys = model.user_keys
    assert torch.equal(
        edited.score(keys[others], hist[others]), ens.score(keys[others], hist[others])
    )
    assert not torch.allclose(
        edited.score(keys[targets], hist[targets]), ens.score(keys[targets], hist[targets])
    )
    back = AttributeOverlay.from_state(overlay.state())
    vecs, _ = shard_views(shards, keys, hist)
    assert torch.equal(back.apply(keys, vecs), overlay.apply(keys, vecs))


def test_split_pairs_is_per_user_seeded_and_holds_out_from_three_rows():
    users = np.repeat(np.array(["a", "b", "c"]), [10, 3, 1])
    items = np.arange(len(users))
    s1 = split_pairs(users, items, valid=0.1, test=0.2, seed=7)
    assert s1.tolist() == split_pairs(users, items, valid=0.1, test=0.2, seed=7).tolist()
    assert (s1[users == "a"] == "test").sum() == 2 and (s1[users == "a"] == "valid").sum() == 1
    assert sorted(s1[users == "b"]) == ["test", "train", "valid"]  # three rows: one of each
    assert (s1[users == "c"] == "train").all()
    assert s1.tolist() != split_pairs(users, items, valid=0.1, test=0.2, seed=8).tolist()
