"""The membership attack on real data (MovieLens 100K from RECUNLEARN_DATA_DIR; skipped
without it): it separates a single model's members from never-seen users, and a model that
never saw the users gives it nothing to find."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from pipelines.bench.common import load_split
from recunlearn.config import load_config
from recunlearn.evidence.mia import fit_attack, item_vectors
from recunlearn.models.bpr import fit_bpr

pytestmark = pytest.mark.datasets


def test_attack_separates_members_and_only_members():
    root = os.environ.get("RECUNLEARN_DATA_DIR")
    if not root or not (Path(root) / "movielens-100k").is_dir():
        pytest.skip("RECUNLEARN_DATA_DIR with movielens-100k not set")
    cfg = load_config(ROOT / "conf" / "default.yaml").model
    data, _ = load_split("movielens-100k", Path(root) / "movielens-100k", seed=11)
    perm = np.random.default_rng(0).permutation(data.n_users)
    n = data.n_users
    shadow_in, shadow_out = np.sort(perm[: n // 6]), np.sort(perm[n // 6 : n // 3])
    never, target = np.sort(perm[n // 3 : n // 2]), np.sort(perm[n // 2 :])
    shadow, _ = fit_bpr(data.subset(shadow_in), cfg, seed=1)
    attack = fit_attack(
        shadow,
        (data.user_keys[shadow_in], data.train[shadow_in]),
        (data.user_keys[shadow_out], data.train[shadow_out]),
        item_vectors(data.train[np.sort(perm[: n // 3])], 32, 0),
        seed=0,
    )
    assert attack.shadow["ci"][0] > 0.5
    model, _ = fit_bpr(data.subset(target), cfg, seed=2)
    members = target[: len(never)]
    neg = (data.user_keys[never], data.train[never])
    seen = attack.evidence(model, (data.user_keys[members], data.train[members]), neg, seed=3)
    assert seen["ci"][0] > 0.6, seen
    # the same users against a model retrained without the members: the separation is gone
    # (up to what activity alone tells apart in groups of ~150, hence a band, not 0.5 exactly)
    retrained, _ = fit_bpr(data.subset(target[len(never) :]), cfg, seed=2)
    blind = attack.evidence(retrained, (data.user_keys[members], data.train[members]), neg, seed=3)
    assert abs(blind["auc"] - 0.5) < 0.12 and blind["ci"][1] < seen["ci"][0], (seen, blind)
