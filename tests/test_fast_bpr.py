"""The fast tier for BPR-MF: the Gauss-Newton pieces against autograd, the direction of every
update, and the bookkeeping of users, items and pairs across a stream of requests."""

import copy

import numpy as np
import pytest
import torch

from recunlearn.config import FastSettings as FastConfig
from recunlearn.config import ModelSettings
from recunlearn.data.interactions import InteractionData
from recunlearn.data.split import split_pairs
from recunlearn.models.bpr import fit_bpr
from recunlearn.unlearning.fast_bpr import METHODS, BPRUnlearner, Linearisation


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    n_users, n_items, groups = 150, 80, 4
    g_user, g_item = rng.integers(0, groups, n_users), rng.integers(0, groups, n_items)
    prob = np.where(g_user[:, None] == g_item[None, :], 0.25, 0.02)
    u, i = np.nonzero(rng.random((n_users, n_items)) < prob)
    keys = np.array([f"u{x:04d}" for x in range(n_users)])[u]
    split = split_pairs(keys, i, valid=0.1, test=0.1, seed=1)
    data = InteractionData.from_columns(keys, i, split, n_items)
    model, _ = fit_bpr(
        data, ModelSettings(dim=16, max_epochs=60, eval_every=5, patience=3, lr=0.01), seed=3
    )
    return data, model


def test_linearisation_matches_autograd(trained):
    data, model = trained
    un = BPRUnlearner(copy.deepcopy(model), data.train, FastConfig(), reg=1e-3)
    g = torch.Generator().manual_seed(0)
    fu = np.repeat(np.arange(3), 4)
    fi = np.concatenate([data.train[r].indices[:4] for r in range(3)]).astype(np.int64)
    users, items = un._block(fu, fi, np.array([], np.int64), full=False)
    terms = un._local_terms(users, items, g, full=False)
    lin = Linearisation(un.model, users, items, terms, 1e-3)
    loss, theta0 = un._loss_fn(users, items)
    theta = theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(theta, terms), theta)
    assert torch.allclose(lin.gradient(), grad, rtol=1e-4, atol=1e-5)
    v, z = torch.randn(len(theta0)), torch.randn(len(terms.u))
    assert torch.allclose(lin.j(v) @ z, v @ lin.jt(z), rtol=1e-4)
    # Gauss-Newton = J^T diag(l'') J: agrees with autograd's Hessian on the directions where
    # the margins' own curvature vanishes (a single bias coordinate moves x linearly)
    e = torch.zeros(len(theta0))
    e[-1] = 1.0
    (hv,) = torch.autograd.grad(
        torch.autograd.grad(loss(theta, terms), theta, create_graph=True)[0], theta, grad_outputs=e
    )
    gn = lin.jt(lin.curvature() * lin.j(e)) + lin.reg_diag * e
    assert torch.allclose(gn[-1], hv[-1], rtol=1e-3)


@pytest.mark.parametrize("method", ["scif", "influence", "finetune", "ascent"])
def test_forgotten_pairs_lose_score(trained, method):
    data, model = trained
    m = copy.deepcopy(model)
    un = BPRUnlearner(m, data.train, FastConfig(), holdout=data.valid, seed=1)
    rng = np.random.default_rng(1)
    coo = data.train.tocoo()
    pick = rng.choice(coo.nnz, 30, replace=False)
    fu, fi = coo.row[pick], coo.col[pick]
    before = model.score(fu).numpy()[np.arange(30), fi]
    info = un.forget_pairs(fu, fi, method)
    after = m.score(fu).numpy()[np.arange(30), fi]
    assert info["pairs"] == 30 and un.train.nnz == data.train.nnz - 30
    if method != "finetune":  # fine-tuning only trains on what stays; it targets nothing
        assert (after - before).mean() < 0, info
    # the forgotten pairs drop more than the other training pairs of the same users
    others = data.train[fu].toarray() > 0
    others[np.arange(30), fi] = False
    drop_other = (m.score(fu).numpy() - model.score(fu).numpy())[others].mean()
    assert (after - before).mean() < drop_other


def test_user_and_item_requests_and_a_stream(trained):
    data, model = trained
    m = copy.deepcopy(model)
    un = BPRUnlearner(m, data.train, FastConfig(), holdout=data.valid, seed=2)
    gone = data.user_keys[[5, 9]]
    info = un.forget_users(gone[:1], "scif")
    assert info["users"] == 1 and info["pairs"] == data.train[5].nnz
    un.forget_users(gone[1:], "finetune")
    assert not m.knows(gone).any() and len(m.user_keys) == data.n_users - 2
    assert m.user.shape[0] == un.train.shape[0] == len(m.user_keys)
    item = int(np.argmax(np.asarray(data.train.sum(0)).ravel()))
    score_before = m.score(np.arange(20))[:, item].mean()
    info = un.forget_items(np.array([item]), "scif")
    assert un.train[:, item].nnz == 0 and info["pairs"] > 0
    assert m.score(np.arange(20))[:, item].mean() < score_before
    # a request for data already gone changes nothing
    again = un.forget_items(np.array([item]), "scif")
    assert again["pairs"] == 0
    with pytest.raises(ValueError, match="unknown fast method"):
        un.forget_users(data.user_keys[:1], "magic")
    assert set(METHODS) == {"influence", "scif", "finetune", "ascent"}


def test_requests_are_deterministic(trained):
    data, model = trained
    out = []
    for _ in range(2):
        m = copy.deepcopy(model)
        BPRUnlearner(m, data.train, FastConfig(), seed=4).forget_users(
            data.user_keys[[1, 2]], "scif"
        )
        out.append(m.item.clone())
    assert torch.equal(out[0], out[1])
