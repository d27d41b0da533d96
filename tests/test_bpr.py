"""BPR-MF on implicit's checkerboard: every even user likes every even item."""

import numpy as np
import torch

from recunlearn.config import ModelSettings
from recunlearn.data.interactions import InteractionData
from recunlearn.models.bpr import BPRMF, fit_bpr
from recunlearn.testing import checkerboard

CFG = ModelSettings(dim=8, lr=0.05, max_epochs=30, eval_every=5, patience=3, batch_size=128)


def test_learns_the_checkerboard():
    data = checkerboard(n_users=40, n_items=30)
    model, stats = fit_bpr(data, CFG, seed=1)
    scores = model.score(np.arange(data.n_users))
    parity_u = torch.tensor([int(k[1:]) % 2 for k in data.user_keys])
    top = torch.topk(scores, 5, dim=1).indices
    assert ((top % 2) == parity_u[:, None]).float().mean() > 0.95
    assert stats["valid_ndcg"] > 0.5


def test_same_seed_same_model_and_seed_matters():
    torch.use_deterministic_algorithms(True)
    data = checkerboard(n_users=40, n_items=30)
    a, _ = fit_bpr(data, CFG, seed=7)
    b, _ = fit_bpr(data, CFG, seed=7)
    c, _ = fit_bpr(data, CFG, seed=8)
    assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item)
    assert not torch.equal(a.item, c.item)


def test_fold_in_recovers_taste_without_training_the_user(tmp_path):
    data = checkerboard(n_users=40, n_items=30)
    model, _ = fit_bpr(data, CFG, seed=1)
    # a new user who liked 8 even items: folded in (no training), the unseen even items must
    # outrank the odd ones, biases included (the fold-in's scale calibration is what does it)
    liked = [0, 2, 4, 6, 8, 10, 12, 14]
    hist = InteractionData.from_columns(
        np.array(["new"] * len(liked)),
        np.array(liked),
        np.array(["train"] * len(liked)),
        data.n_items,
    ).train
    before = (model.item.clone(), model.bias.clone())
    s = model.score_history(hist)[0]
    even = [i for i in range(0, data.n_items, 2) if i not in liked]
    odd = list(range(1, data.n_items, 2))
    auc = (s[even][:, None] > s[odd][None, :]).float().mean()
    assert auc > 0.9
    assert torch.equal(model.item, before[0]) and torch.equal(model.bias, before[1])
    path = tmp_path / "m.pt"
    model.save(path)
    again = BPRMF.load(path)
    assert torch.equal(again.item, model.item) and list(again.user_keys) == list(model.user_keys)
    assert model.rows_of(np.array(["u001", "nobody"])).tolist() == [1, -1]


def test_the_sparse_optimiser_touches_only_the_batch_and_learns_as_well():
    from recunlearn.models.bpr import SparseBPRModule

    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(0)
    net = SparseBPRModule(6, 10, 4, 0.1, g)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SparseAdam(list(net.parameters()), lr=0.1)
    loss = net.loss(torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 5]), 1e-4)
    loss.backward()
    assert all(p.grad.is_sparse for p in net.parameters())
    opt.step()
    moved = {
        k: (v != before[k]).any(1).nonzero().flatten().tolist() for k, v in net.state_dict().items()
    }
    assert moved == {"user": [1, 2], "item": [3, 4, 5], "item_bias": [3, 4, 5]}

    data = checkerboard(n_users=40, n_items=30)
    sparse = CFG.model_copy(update={"optimizer": "sparse_adam"})
    a, stats = fit_bpr(data, sparse, seed=1)
    b, _ = fit_bpr(data, sparse, seed=1)
    assert torch.equal(a.item, b.item) and torch.equal(a.bias, b.bias)  # seeded
    _, dense = fit_bpr(data, CFG, seed=1)
    assert stats["valid_ndcg"] > 0.5 and stats["valid_ndcg"] >= 0.9 * dense["valid_ndcg"]
    assert isinstance(a, BPRMF) and a.bias.shape == (data.n_items,)
