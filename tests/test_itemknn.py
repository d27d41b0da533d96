"""Item-kNN with an incremental top-k index: every kind of deletion gives, bit for bit, the
index rebuilt from scratch without the data, and only the affected rows are recomputed."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recunlearn.models.itemknn import ItemKNN


def random_data(n_users=300, n_items=120, density=0.05, seed=0):
    rng = np.random.default_rng(seed)
    # a long tail: a few popular items, many rare ones
    p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    x = (rng.random((n_users, n_items)) < density * n_items * p / p.sum()).astype(np.float32)
    keys = np.array([f"u{i:04d}" for i in range(n_users)])
    return keys, sp.csr_matrix(x)


def same_index(a: ItemKNN, b: ItemKNN) -> None:
    assert np.array_equal(a.neighbours, b.neighbours)
    assert np.array_equal(a.sims, b.sims)
    dense = lambda c: c if isinstance(c, np.ndarray) else c.toarray()  # noqa: E731
    assert np.array_equal(dense(a.cooc), dense(b.cooc)) and np.array_equal(a.counts, b.counts)
    h = b.x[:20]
    assert torch.equal(a.score_history(h), b.score_history(h))


def test_index_is_the_top_k_of_cosine_hand_computed():
    # items 0 and 1 always together, item 2 with 0 once
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float32))
    m = ItemKNN(np.array(["a", "b", "c"]), x, k=1)
    # sim(0,1) = 2 / (sqrt2 sqrt2) = 1; sim(0,2) = 1 / (sqrt2 sqrt2) = 0.5; sim(2,1) = 0.5
    assert m.neighbours[:, 0].tolist() == [1, 0, 0]  # item 2: tie 0/1 at 0.5, lower index first
    assert np.allclose(m.sims[:, 0], [1.0, 1.0, 0.5])
    # user "c" (item 2) gets item 0's and item 1's lists: sim(0, 2) is not in 0's top-1
    assert m.score_history(sp.csr_matrix(np.array([[0, 0, 1]], np.float32))).tolist() == [
        [0.0, 0.0, 0.0]
    ]


@pytest.mark.parametrize("k,dense_items", [(5, 6000), (30, 6000), (30, 0)])
def test_forget_users_equals_rebuild(k, dense_items):
    keys, x = random_data()
    m = ItemKNN(keys, x, k=k, shrink=1.0, dense_items=dense_items)
    gone = np.array(["u0003", "u0150", "u0299"])
    stats = m.forget_users(gone)
    keep = ~np.isin(keys, gone)
    same_index(m, ItemKNN(keys[keep], x[keep], k=k, shrink=1.0, dense_items=dense_items))
    # one at a time, as a request stream arrives, gives the same index
    m2 = ItemKNN(keys, x, k=k, shrink=1.0, dense_items=dense_items)
    for g in gone:
        m2.forget_users(np.array([g]))
    same_index(m2, m)
    assert stats["users_removed"] == 3 and not m.knows(gone).any()
    assert 0 < stats["index_rows_recomputed"] <= x.shape[1]


def test_light_user_recomputes_few_rows():
    keys, x = random_data(n_items=400, density=0.01, seed=4)
    counts = np.diff(x.indptr)
    light = keys[np.flatnonzero(counts == 1)[:1]]
    m = ItemKNN(keys, x, k=10)
    stats = m.forget_users(light)
    assert stats["index_rows_recomputed"] < x.shape[1] // 4


@pytest.mark.parametrize("dense_items", [6000, 0])
def test_forget_pairs_and_items_equal_rebuild(dense_items):
    keys, x = random_data(seed=1)
    m = ItemKNN(keys, x, k=8, dense_items=dense_items)
    coo = x.tocoo()
    pick = np.random.default_rng(2).choice(coo.nnz, 25, replace=False)
    m.forget_pairs(coo.row[pick], coo.col[pick])
    dense = x.toarray()
    dense[coo.row[pick], coo.col[pick]] = 0
    same_index(m, ItemKNN(keys, sp.csr_matrix(dense), k=8))
    m.forget_items(np.array([0, 7]))
    dense[:, [0, 7]] = 0
    same_index(m, ItemKNN(keys, sp.csr_matrix(dense), k=8))
    assert not (m.neighbours == 0).any() and not (m.neighbours == 7).any()


def test_update_cannot_add_and_state_round_trips(tmp_path):
    keys, x = random_data(n_users=50, n_items=30, seed=3)
    m = ItemKNN(keys, x, k=4)
    with pytest.raises(ValueError):
        m.update_rows(np.array([0]), sp.csr_matrix(np.ones((1, 30), np.float32)))
    m.save(tmp_path / "knn.pt")
    same_index(ItemKNN.load(tmp_path / "knn.pt"), m)
