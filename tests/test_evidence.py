"""Golden tests of the audit suite's measures: each pinned on a hand-computed case."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recunlearn.evidence.completeness import (
    bootstrap_mean_ci,
    functional,
    functional_gap,
    parameter_distance,
    parametric_evidence,
    score_distance,
)
from recunlearn.evidence.fairness import a_igf, active_mask, draw_forget_users, shard_spread
from recunlearn.evidence.mia import auc, auc_ci, features
from recunlearn.metrics import per_user_metrics
from recunlearn.models.bpr import BPRMF


def csr(rows, n_items):
    r, c = (
        zip(*[(i, j) for i, items in enumerate(rows) for j in items], strict=True)
        if any(rows)
        else ((), ())
    )
    return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(rows), n_items))


def model(keys, user, item, bias=None):
    item = torch.tensor(item, dtype=torch.float32)
    return BPRMF(
        np.array(keys),
        torch.tensor(user, dtype=torch.float32),
        item,
        torch.zeros(item.shape[0]) if bias is None else torch.tensor(bias, dtype=torch.float32),
    )


def test_auc_hand_computed_with_ties():
    # pairs (pos > neg): .9>.5, .9>.1, .4<.5, .4>.1 -> 3 of 4
    assert auc([0.9, 0.4], [0.5, 0.1]) == 0.75
    # a tie counts half: (.5 vs .5) = .5, (.5 > .1) = 1 -> 1.5 / 2
    assert auc([0.5], [0.5, 0.1]) == 0.75
    assert auc([1, 2], [3, 4]) == 0.0 and auc([3, 4], [1, 2]) == 1.0


def test_auc_interval_brackets_the_point_and_narrows_with_data():
    rng = np.random.default_rng(0)
    small = auc_ci(rng.normal(1, 1, 20), rng.normal(0, 1, 20), resamples=300, seed=1)
    big = auc_ci(rng.normal(1, 1, 2000), rng.normal(0, 1, 2000), resamples=300, seed=1)
    for r in (small, big):
        assert r["ci"][0] <= r["auc"] <= r["ci"][1]
    assert big["ci"][1] - big["ci"][0] < small["ci"][1] - small["ci"][0]
    # the true AUC of N(1,1) vs N(0,1) is Phi(1/sqrt 2) = 0.760
    assert big["ci"][0] < 0.760 < big["ci"][1]


def test_bootstrap_mean_ci():
    assert bootstrap_mean_ci(np.zeros(10)) == [0.0, 0.0]
    assert bootstrap_mean_ci(np.array([1.0])) is None
    lo, hi = bootstrap_mean_ci(np.arange(100.0), seed=3)
    assert lo < 49.5 < hi


def test_a_igf_and_active_mask_hand_computed():
    # activity 5, 1, 3, 3: the top 25% is user 0 (one of four)
    train = csr([[0, 1, 2, 3, 4], [0], [0, 1, 2], [1, 2, 3]], 5)
    act = active_mask(train, 0.25)
    assert act.tolist() == [True, False, False, False]
    g = a_igf(np.array([0.8, 0.2, 0.4, 0.6]), act)
    assert g["active"] == 0.8 and g["inactive"] == 0.4 and g["gap"] == 0.4
    assert g["n_active"] == 1 and g["n_inactive"] == 3


def test_shard_spread_hand_computed():
    s = shard_spread(np.array([0.1, 0.3, 0.5, 0.9]), np.array([0, 0, 1, 1]))
    assert s["per_shard"] == {"0": 0.2, "1": 0.7}
    assert s["max_minus_min"] == 0.5 and s["std"] == 0.25


def test_forget_set_kinds():
    counts = [1, 9, 5, 2, 8, 3]
    train = csr([list(range(c)) for c in counts], 10)
    rng = np.random.default_rng(0)
    assert draw_forget_users(train, "core", 2, rng).tolist() == [1, 4]
    assert draw_forget_users(train, "edge", 2, rng).tolist() == [0, 3]
    r = draw_forget_users(train, "random", 3, np.random.default_rng(5))
    assert len(set(r.tolist())) == 3 and r.tolist() == sorted(r.tolist())
    assert draw_forget_users(train, "core", 1, rng, candidates=np.array([0, 2, 3])).tolist() == [2]
    with pytest.raises(ValueError):
        draw_forget_users(train, "middle", 1, rng)
    with pytest.raises(ValueError):
        draw_forget_users(train, "core", 7, rng)


def test_per_user_metrics_keep_order_and_hr():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]])
    seen = csr([[], [1]], 3)
    truth = csr([[1], [2]], 3)
    m = per_user_metrics(lambda r: scores[torch.from_numpy(r)], np.array([1, 0]), seen, truth, k=1)
    # user 1: item 1 is seen, so top-1 = item 2 (hit); user 0: top-1 = item 0 (miss)
    assert m["hr"].tolist() == [1.0, 0.0] and m["ndcg"].tolist() == [1.0, 0.0]


def test_parameter_distance_hand_computed():
    a = model(["u1", "u2"], [[1, 0], [0, 1]], [[1, 0], [0, 0]])
    b = model(["u2", "u3"], [[0, 2], [5, 5]], [[1, 0], [0, 0]])
    # common user u2: (0,1) vs (0,2): diff^2 = 1; items equal; bias equal
    # ||b|| over the compared blocks: u2 (0,2) -> 4, items -> 1: sqrt(5)
    d = parameter_distance(a, b)
    assert d["common_users"] == 1
    assert math.isclose(d["relative_l2"], 1 / math.sqrt(5), rel_tol=1e-9)
    ev = parametric_evidence(b, b, [a])
    assert ev["distance_to_retrain"] == 0.0 and ev["within_seed_spread"]


def test_score_distance_ignores_rotation_and_user_shift():
    rng = np.random.default_rng(0)
    u, q = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a = model(["a", "b", "c", "d"], u, q)
    b = model(["a", "b", "c", "d"], u @ rot, q @ rot)  # same scores, other parameters
    keys, hist = np.array(["a", "b", "c", "d"]), csr([[0], [1], [2], [3]], 6)
    assert parameter_distance(a, b)["relative_l2"] > 0.1
    assert score_distance(a, b, keys, hist) < 1e-5
    c = model(["a", "b", "c", "d"], u, q, bias=np.ones(6) * 3.0)  # a constant shift per user
    assert score_distance(a, c, keys, hist) < 1e-5


def test_functional_gap_is_zero_for_the_same_model_and_sees_memorisation():
    # items 0-3; the "original" memorised the user's held-out item 3
    orig = model(["x"], [[1.0]], [[0.1], [0.2], [0.3], [5.0]])
    retr = model(["x"], [[1.0]], [[0.1], [0.2], [0.3], [-5.0]])
    keys, hist, truth = np.array(["x"]), csr([[0]], 4), csr([[3]], 4)
    assert functional(orig, keys, hist, truth, k=1)["ndcg"].tolist() == [1.0]
    same = functional_gap(retr, retr, keys, hist, truth, original=orig, k=1)
    assert (
        same["difference"] == 0.0
        and same["ndcg@1_original"] == 1.0
        and same["ndcg@1_retrained"] == 0.0
    )
    leak = functional_gap(orig, retr, keys, hist, truth, k=1)
    assert leak["difference"] == 1.0


def test_mia_features_hand_computed():
    # item vectors e0..e3 in 2-d; the user saw items 0 and 1, the model recommends item 3 first
    vecs = np.array([[1, 0], [0, 1], [1, 1], [-1, -1]], dtype=np.float32)
    m = model(["x"], [[1.0]], [[0.0], [0.0], [0.5], [1.0]])
    f = features(m, np.array(["x"]), csr([[0, 1]], 4), vecs, n_rec=1)
    # centroid of seen (0.5, 0.5) minus the recommended item (-1, -1)
    assert np.allclose(f, [[1.5, 1.5]])
    # n_rec is capped at the unseen items: 2 here, items 3 and 2 -> centroid (0, 0)
    f2 = features(m, np.array(["x"]), csr([[0, 1]], 4), vecs, n_rec=100)
    assert np.allclose(f2, [[0.5, 0.5]])
