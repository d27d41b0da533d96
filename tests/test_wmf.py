"""WMF (implicit ALS) and its exact unlearning update: trained and updated models satisfy the
normal equations of the data they stand for, checked against a dense, independent formula."""

import numpy as np
import pytest
import scipy.sparse as sp

from recunlearn.models.wmf import WMF, fit_wmf


def random_data(n_users=120, n_items=60, density=0.08, seed=0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** 0.7
    x = (rng.random((n_users, n_items)) < density * n_items * p / p.sum()).astype(np.float64)
    x[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # nobody is empty
    return np.array([f"u{i:04d}" for i in range(n_users)]), sp.csr_matrix(x)


def dense_residual(m: WMF, r: sp.csr_matrix) -> float:
    """max over rows of |A x - b| / |b| from Hu et al.'s equations, written out densely."""
    p = r.toarray() > 0
    c = 1.0 + m.alpha * p
    x, y = m.users.f, m.items.f
    worst = 0.0
    for f, g, cc, pp in ((x, y, c, p), (y, x, c.T, p.T)):
        for row in range(f.shape[0]):
            a = (g * cc[row][:, None]).T @ g + m.reg * np.eye(g.shape[1])
            b = (g * (cc[row] * pp[row])[:, None]).sum(0)
            res = np.linalg.norm(a @ f[row] - b)
            worst = max(worst, res / np.linalg.norm(b) if np.linalg.norm(b) > 0 else res)
    return worst


PARAMS = dict(dim=8, alpha=10.0, reg=2.0, tol=1e-4)


def test_fit_satisfies_the_normal_equations():
    keys, r = random_data()
    m, stats = fit_wmf(keys, r, seed=1, **PARAMS)
    assert stats["rounds"] > 1
    assert m.max_residual() <= PARAMS["tol"]
    assert dense_residual(m, r) <= PARAMS["tol"] * 1.01


@pytest.mark.parametrize("kind", ["users", "pairs", "items"])
def test_forget_reconverges_on_the_retained_data(kind):
    keys, r = random_data(seed=2)
    m, _ = fit_wmf(keys, r, seed=1, **PARAMS)
    retained = r.tolil(copy=True)
    if kind == "users":
        gone = keys[[3, 50, 77]]
        info = m.forget_users(gone)
        keep = ~np.isin(keys, gone)
        retained = r[keep]
        assert list(m.user_keys) == list(keys[keep]) and not m.knows(gone).any()
    elif kind == "pairs":
        coo = r.tocoo()
        pick = np.random.default_rng(0).choice(coo.nnz, 25, replace=False)
        info = m.forget_pairs(coo.row[pick], coo.col[pick])
        retained[coo.row[pick], coo.col[pick]] = 0
        retained = retained.tocsr()
        assert info["pairs"] == 25
    else:
        info = m.forget_items(np.array([0, 7]))
        retained[:, [0, 7]] = 0
        retained = retained.tocsr()
        assert np.allclose(m.items.f[[0, 7]], 0.0)  # nobody left: exactly zero
    retained.eliminate_zeros()
    assert info["rounds"] >= 1
    assert (m.users.m != (retained > 0)).nnz == 0  # the forgotten pairs left the matrix
    assert dense_residual(m, retained) <= PARAMS["tol"] * 1.01
    # the tracked residuals are the true ones
    assert m.max_residual() <= PARAMS["tol"]


def test_update_agrees_with_retrain_as_closely_as_two_retrains():
    keys, r = random_data(n_users=200, seed=5)
    params = {**PARAMS, "tol": 1e-3}  # ALS's tail is slow: 1e-4 takes hundreds of rounds here
    m, _ = fit_wmf(keys, r, seed=1, **params)
    gone = keys[:5]
    m.forget_users(gone)
    keep = ~np.isin(keys, gone)
    a, _ = fit_wmf(keys[keep], r[keep], seed=1, **params)
    b, _ = fit_wmf(keys[keep], r[keep], seed=7, **params)

    def scores(w):
        return w.users.f @ w.items.f.T

    spread = np.linalg.norm(scores(a) - scores(b)) / np.linalg.norm(scores(a))
    dist = np.linalg.norm(scores(m) - scores(a)) / np.linalg.norm(scores(a))
    assert dist <= max(2 * spread, 1e-3), (dist, spread)


def test_fold_in_solves_the_same_equations_and_state_round_trips():
    keys, r = random_data(seed=3)
    m, _ = fit_wmf(keys, r, seed=1, **PARAMS)
    folded = m.fold_in(r[:10])
    rel = np.linalg.norm(folded - m.users.f[:10], axis=1) / np.linalg.norm(m.users.f[:10], axis=1)
    assert rel.max() < 1e-2
    back = WMF.from_state(m.state())
    assert np.array_equal(back.users.f, m.users.f) and back.max_residual() <= PARAMS["tol"]
    assert np.allclose(back.score(np.arange(5)).numpy(), m.score(np.arange(5)).numpy())
