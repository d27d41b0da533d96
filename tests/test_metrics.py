"""Golden tests: every metric pinned on hand-computed cases."""

import math

import numpy as np
import scipy.sparse as sp
import torch

from recunlearn.metrics import evaluate, rank_metrics, topk_excluding


def csr(rows, n_items):
    r, c = (
        zip(*[(i, j) for i, items in enumerate(rows) for j in items], strict=True)
        if any(rows)
        else ((), ())
    )
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


def test_rank_metrics_hand_computed():
    # user 0: top = [3, 1, 4], truth {1, 5}: one hit at rank 2.
    #   DCG = 1/log2(3); IDCG = 1 + 1/log2(3); recall = 1/2; hr = 1
    # user 1: top = [2, 0, 1], truth {2}: hit at rank 1 -> NDCG 1, recall 1
    # user 2: top = [0, 1, 2], truth {5}: nothing -> 0, 0, 0
    top = np.array([[3, 1, 4], [2, 0, 1], [0, 1, 2]])
    truth = csr([[1, 5], [2], [5]], 6)
    m = rank_metrics(top, truth, 3)
    dcg0 = 1 / math.log2(3)
    assert np.allclose(m["ndcg"], [dcg0 / (1 + dcg0), 1.0, 0.0])
    assert np.allclose(m["recall"], [0.5, 1.0, 0.0])
    assert np.allclose(m["hr"], [1.0, 1.0, 0.0])


def test_ndcg_ideal_is_truncated_at_k():
    # 5 truth items, K = 2, both top slots hit: NDCG must be 1 (IDCG over min(|T|, K) slots)
    m = rank_metrics(np.array([[0, 1]]), csr([[0, 1, 2, 3, 4]], 6), 2)
    assert m["ndcg"][0] == 1.0
    assert m["recall"][0] == 2 / 5


def test_topk_excludes_training_items():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    top = topk_excluding(scores, csr([[0, 2]], 4), 2)
    assert top.tolist() == [[1, 3]]


def test_evaluate_skips_users_without_truth_and_averages():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    train = csr([[], [], []], 3)
    truth = csr([[0], [2], []], 3)  # user 2 has no test items: not counted
    out = evaluate(lambda r: scores[torch.from_numpy(r)], np.arange(3), train, truth, k=1)
    # user 0: top-1 = item 0 (hit) ; user 1: top-1 = item 1 (miss)
    assert out["users"] == 2
    assert out["ndcg@1"] == 0.5 and out["recall@1"] == 0.5 and out["hr@1"] == 0.5


def test_scoring_blocks_shrink_with_the_catalogue_and_change_no_result():
    """Users are scored in blocks of at most MAX_SCORE_CELLS cells: a catalogue 64x larger
    gets blocks 64x smaller, and the metrics are those of one big block."""
    from recunlearn import metrics

    assert metrics.user_block(1024, 3_000) == 1024
    assert metrics.user_block(1024, 2_500_000) == (1 << 24) // 2_500_000 == 6
    assert metrics.user_block(1024, 10**9) == 1
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 40
    scores = torch.from_numpy(rng.random((n_users, n_items)).astype(np.float32))
    seen = sp.random(n_users, n_items, density=0.2, format="csr", random_state=1)
    truth = sp.random(n_users, n_items, density=0.1, format="csr", random_state=2)
    calls = []

    def rows(u):
        calls.append(len(u))
        return scores[u]

    whole = metrics.per_user_metrics(rows, np.arange(n_users), seen, truth, k=5)
    old, metrics.MAX_SCORE_CELLS = metrics.MAX_SCORE_CELLS, 7 * n_items
    try:
        calls.clear()
        blocked = metrics.per_user_metrics(rows, np.arange(n_users), seen, truth, k=5)
    finally:
        metrics.MAX_SCORE_CELLS = old
    assert max(calls) == 7 and sum(calls) == n_users
    for m in whole:
        assert np.array_equal(whole[m], blocked[m])
