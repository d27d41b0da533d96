"""Item-based kNN with an exact incremental top-k index (a model-specific exact unlearning
method, the model-specific exact family of Li et al.'s survey of recommendation unlearning).

The model is the item-item co-occurrence matrix ``C = X^T X`` of the binary user-item matrix
``X``, cosine similarities ``sim(i, j) = C_ij / (sqrt(C_ii C_jj) + shrink)``, and for every
item its ``k`` most similar items. A user is scored by summing, over the items of their
history, the similarities of each candidate item's neighbour list.

Deletion (users, items or single interactions) is one primitive: some users' rows change.
``C`` is updated by ``X_old[rows]^T X_old[rows] - X_new[rows]^T X_new[rows]`` (integer counts,
so the update is exact in floating point), and only the rows of the top-k index whose
similarities can have changed are recomputed: the items whose count changed and the items
that co-occur with them. Every row is computed by the same function from the same counts as
a rebuild would, so the index after a deletion equals the index rebuilt without the data,
bit for bit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from recunlearn.data.interactions import (
    binary_csr,
    csr_from_state,
    csr_state,
    drop_rows,
    replace_rows,
    without_pairs,
)
from recunlearn.models.base import Recommender

if TYPE_CHECKING:
    from recunlearn.config import ItemKNNSettings
    from recunlearn.data.interactions import InteractionData


_SMALLEST = np.nextafter(0.0, 1.0)  # the smallest positive float64: x >= it iff x > 0
DENSE_ITEMS = 6000  # up to this many items the counts are a dense array (6000^2 x 8 B = 288 MB)


class ItemKNN(Recommender):
    def __init__(
        self,
        user_keys: np.ndarray,
        x: sp.csr_matrix,
        *,
        k: int = 50,
        shrink: float = 0.0,
        chunk: int = 1024,
        dense_items: int = DENSE_ITEMS,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.user_keys = np.asarray(user_keys).astype(str)
        self.x = binary_csr(x)
        self.n_items = int(x.shape[1])
        self.k = min(k, self.n_items - 1)
        self.shrink = float(shrink)
        self.chunk = chunk
        self.dense_items = dense_items
        self.meta = dict(meta or {})
        cooc = (self.x.T @ self.x).tocsr().astype(np.float64)
        # Small catalogues keep the counts dense (row and block reads, in-place updates);
        # large ones sparse. Either way the values are the same integers.
        self.cooc: np.ndarray | sp.csr_matrix = (
            cooc.toarray() if self.n_items <= dense_items else cooc
        )
        self.counts = cooc.diagonal().copy()  # C_ii: each item's number of users
        self.neighbours = np.full((self.n_items, self.k), -1, dtype=np.int64)
        self.sims = np.zeros((self.n_items, self.k))  # float64: exactly what a rebuild computes
        self._recompute(np.arange(self.n_items))

    # ---- the index
    def _recompute(self, items: np.ndarray) -> None:
        """Top-k neighbours of ``items`` from the current counts (one code path for build and
        update, so both give identical rows), in chunks of rows."""
        for s in range(0, len(items), self.chunk):
            rows = np.asarray(items[s : s + self.chunk])
            self._store_top(rows, self._sim_rows(rows))

    def _store_top(self, rows: np.ndarray, sim: np.ndarray) -> None:
        """Store the top-k of ``rows``' similarity rows ``sim`` as their neighbour lists."""
        part = _topk_lowest_index(sim, self.k)  # in column order
        vals = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")  # by similarity, then item index
        part, vals = np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1)
        part[vals <= 0] = -1
        self.neighbours[rows] = part
        self.sims[rows] = np.where(vals > 0, vals, 0.0)
        self._matrix = None

    def _sim_rows(self, rows: np.ndarray) -> np.ndarray:
        """Dense similarity rows: sim(i, j) = C_ij / (norm_i norm_j + shrink), 0 on the diagonal."""
        norm = np.sqrt(self.counts)
        c = self._count_rows(rows)
        denom = norm[rows][:, None] * norm[None, :] + self.shrink
        sim = np.zeros_like(denom)
        np.divide(c, denom, out=sim, where=denom > 0)
        sim[np.arange(len(rows)), rows] = 0.0  # never its own neighbour
        return sim

    def _count_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.cooc[rows] if isinstance(self.cooc, np.ndarray) else self.cooc[rows].toarray()

    def similarity_matrix(self) -> sp.csr_matrix:
        """(n_items, n_items) sparse S with S[i, j] = sim(i, j) for j among i's neighbours."""
        if self._matrix is None:
            keep = self.neighbours >= 0
            rows = np.repeat(np.arange(self.n_items), keep.sum(1))
            self._matrix = sp.csr_matrix(
                (self.sims[keep].astype(np.float32), (rows, self.neighbours[keep])),
                shape=(self.n_items, self.n_items),
            )
        return self._matrix

    def update_rows(self, rows: np.ndarray, new_rows: sp.csr_matrix) -> dict[str, int]:
        """Replace users ``rows`` of X by ``new_rows`` (a subset of their old items) and repair
        the index. Returns how many counts and index rows changed."""
        rows = np.asarray(rows, dtype=np.int64)
        old, new = self.x[rows], binary_csr(new_rows)
        if ((new - old.multiply(new)).nnz) != 0:
            raise ValueError("update_rows only removes interactions; it cannot add any")
        stats = self._repair(old, new)
        self.x = replace_rows(self.x, rows, new)
        return stats

    def _repair(self, old: sp.csr_matrix, new: sp.csr_matrix) -> dict[str, int]:
        """Counts and index after some users' rows went from ``old`` to ``new`` (X untouched)."""
        dense = isinstance(self.cooc, np.ndarray)
        if dense:  # the change is a dense block over the rows' items
            cols = np.unique(old.indices)
            o = old[:, cols].toarray().astype(np.float64)
            w = new[:, cols].toarray().astype(np.float64)
            block = o.T @ o - w.T @ w  # small integers: exact
            changed = int(np.count_nonzero(block))
            moved = cols[block.any(1)]  # items whose counts changed
        else:
            delta = (old.T @ old - new.T @ new).tocsr()
            delta.eliminate_zeros()
            changed = int(delta.nnz)
            moved = np.unique(delta.nonzero()[0])
        if changed == 0:
            return {"counts_changed": 0, "index_rows_recomputed": 0, "index_rows_merged": 0}
        if dense:
            self.cooc[np.ix_(cols, cols)] -= block
            self.counts[cols] -= np.diagonal(block)
        else:
            self.cooc = (self.cooc - delta.astype(np.float64)).tocsr()
            self.cooc.eliminate_zeros()
            self.counts -= delta.diagonal()
        # dense counts: the moved rows' similarities serve both the merge and their recompute
        sim = self._sim_rows(moved) if dense else None
        fallback, merged = self._merge_untouched(moved, sim)
        if sim is not None:
            self._store_top(moved, sim)
        else:
            self._recompute(moved)
        if len(fallback):
            self._recompute(fallback)
        return {
            "counts_changed": changed,
            "index_rows_recomputed": int(len(moved) + len(fallback)),
            "index_rows_merged": int(merged),
        }

    def _merge_untouched(self, moved: np.ndarray, sim: np.ndarray | None) -> tuple[np.ndarray, int]:
        """Repair the lists of the items whose own counts did not change, without scanning
        every item's row. Returns the rows left to a full recompute and how many were merged.

        A deletion only lowers counts. For such an item i no deleted user had i, so C_id is
        unchanged for every d, and only its similarities to the moved items change: they grow
        (a moved item's norm fell). So the new list is the top-k of the old list and the moved
        items, and only two kinds of rows need work: those holding a moved item (its value
        grew, the order may change) and those a moved item now enters (its new value reaches
        the row's last one). Both are found from the moved items' count rows alone (C is
        symmetric). One case goes to a full recompute: the last value did
        not move and a moved item holds it, where an item outside both could tie there and
        win on a lower index."""
        n, k = self.n_items, self.k
        if len(moved) == 0 or len(moved) == n:
            return np.zeros(0, np.int64), 0
        is_moved = np.zeros(n, bool)
        is_moved[moved] = True
        pos = np.full(n, -1, np.int64)
        pos[moved] = np.arange(len(moved))
        nb = self.neighbours
        held = np.append(is_moved, False)[nb]  # moved items held in a list (padding -1: False)
        held[moved] = False
        hr, hc = np.nonzero(held)
        last = self.sims[:, -1]
        # The moved items' counts with every item (C_di = C_id), and their similarities
        # exactly as _recompute computes them: c / (norm_i norm_d + shrink).
        if sim is not None:  # (|moved|, n): sim(d, i) = sim(i, d), the same float (C symmetric)
            held_s = sim[pos[nb[hr, hc]], hr]
            enter = sim >= np.maximum(last, _SMALLEST)[None, :]  # positive and reaching last
            enter[:, moved] = False
            enter[pos[nb[hr, hc]], hr] = False  # already held: not an entrant
            ep, er = np.nonzero(enter)
            ed, es = moved[ep], sim[ep, er]
        else:
            norm = np.sqrt(self.counts)
            dp, it, c = self._count_entries(moved)
            keep = ~is_moved[it]
            dp, it, c = dp[keep], it[keep], c[keep]
            s = c / (norm[it] * norm[moved[dp]] + self.shrink)
            at = np.searchsorted(dp * n + it, pos[nb[hr, hc]] * n + hr)
            held_s = s[at]
            enter = s >= np.maximum(last, _SMALLEST)[it]
            enter[at] = False
            er, ed, es = it[enter], moved[dp[enter]], s[enter]
        mark = np.zeros(n, bool)
        mark[hr], mark[er] = True, True
        rows = np.flatnonzero(mark)
        if len(rows) == 0:
            return np.zeros(0, np.int64), 0
        w = np.searchsorted(rows, hr)
        vals = np.where(nb[rows] >= 0, self.sims[rows], -1.0)
        vals[w, hc] = held_s
        cand = nb[rows]
        # Rows with entrants get them as extra columns (padded with -1 values); the others
        # only re-sort their own list.
        order = np.argsort(er, kind="stable")
        er, ed, es = er[order], ed[order], es[order]
        top, out = np.empty((len(rows), k), np.int64), np.empty((len(rows), k))
        plain = np.ones(len(rows), bool)
        if len(er):
            ent_rows, first, per = np.unique(er, return_index=True, return_counts=True)
            g = np.searchsorted(rows, ent_rows)
            plain[g] = False
            slot = np.arange(len(er)) - np.repeat(first, per)
            wr = np.repeat(np.arange(len(ent_rows)), per)
            extra = int(per.max())
            gc = np.concatenate([cand[g], np.full((len(g), extra), -1, np.int64)], 1)
            gv = np.concatenate([vals[g], np.full((len(g), extra), -1.0)], 1)
            gc[wr, k + slot], gv[wr, k + slot] = ed, es
            top[g], out[g] = _sorted_top(gc, gv, k, n)
        # The others' values only grew where they hold a moved item, by a small factor: most
        # rows are still in order and need no sort.
        pc, pv = cand[plain], vals[plain]
        v0, v1, c0, c1 = pv[:, :-1], pv[:, 1:], pc[:, :-1], pc[:, 1:]
        bad = ~((v0 > v1) | ((v0 == v1) & ((c0 < c1) | (v1 <= 0)))).all(1)
        if bad.any():
            pc[bad], pv[bad] = _sorted_top(pc[bad], pv[bad], k, n)
        top[plain], out[plain] = pc, pv
        vals = out
        last = last[rows]
        risky = (
            (last > 0)
            & (vals[:, -1] == last)
            & ((vals == vals[:, -1:]) & is_moved[np.maximum(top, 0)] & (top >= 0)).any(1)
        )
        ok = ~risky
        top[vals <= 0] = -1
        self.neighbours[rows[ok]] = top[ok]
        self.sims[rows[ok]] = np.maximum(vals[ok], 0.0)
        self._matrix = None
        return rows[risky], int(ok.sum())

    def _count_entries(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nonzero counts of ``items``' rows of the sparse counts, as (position in items,
        column, count) sorted by position then column."""
        sub = self.cooc[items]
        sub.sort_indices()
        sub = sub.tocoo()
        keep = sub.data != 0
        return sub.row[keep].astype(np.int64), sub.col[keep].astype(np.int64), sub.data[keep]

    @property
    def n_train(self) -> int:
        """Training interactions the model holds."""
        return int(self.x.nnz)

    def forget_users(self, keys: np.ndarray) -> dict[str, int]:
        """Remove users entirely: their rows and keys leave the model."""
        rows = self.held_rows(keys)
        stats = self._repair(
            self.x[rows], sp.csr_matrix((len(rows), self.n_items), dtype=np.float32)
        )
        self.user_keys, self.x = drop_rows(self.user_keys, self.x, rows)
        return {**stats, "users_removed": int(len(rows))}

    def forget_pairs(self, user_rows: np.ndarray, items: np.ndarray) -> dict[str, int]:
        """Remove single interactions (user row, item)."""
        rows, _, new = without_pairs(self.x, user_rows, items)
        return self.update_rows(rows, new)

    def forget_items(self, items: np.ndarray) -> dict[str, int]:
        """Remove every interaction with ``items``."""
        items = np.asarray(items, np.int64)
        rows = np.unique(self.x[:, items].nonzero()[0])
        mask = np.zeros(self.n_items, bool)
        mask[items] = True
        new = self.x[rows].multiply(sp.csr_matrix(~mask[None, :]).astype(np.float32)).tocsr()
        new.eliminate_zeros()
        return self.update_rows(rows, new)

    # ---- the Recommender interface
    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        # score(u, j) = sum over i in h(u) of sim(j, i) for i among j's neighbours
        s = (binary_csr(history) @ self.similarity_matrix().T).toarray()
        return torch.from_numpy(np.asarray(s, dtype=np.float32))

    def score(self, rows: np.ndarray) -> torch.Tensor:
        return self.score_history(self.x[np.asarray(rows)])

    def state(self) -> dict[str, Any]:
        return {
            "kind": "itemknn",
            "user_keys": self.user_keys.tolist(),
            "k": self.k,
            "shrink": self.shrink,
            "dense_items": self.dense_items,
            **csr_state(self.x),
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ItemKNN:
        return cls(
            np.asarray(state["user_keys"], dtype=str),
            csr_from_state(state),
            k=state["k"],
            shrink=state["shrink"],
            dense_items=state.get("dense_items", DENSE_ITEMS),
            meta=state.get("meta"),
        )


def _sorted_top(
    cand: np.ndarray, vals: np.ndarray, k: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` candidates of largest value, ties to the lower index (padding,
    cand -1, after everything), in that order. A stable sort by value (fast on the nearly
    sorted rows the merge gives it) is already right unless two equal positive values came
    out with the higher index first; only those rows go through the two-key sort."""
    order = np.argsort(-vals, axis=1, kind="stable")
    v, c = np.take_along_axis(vals, order, 1), np.take_along_axis(cand, order, 1)
    wrong = ((v[:, 1:] == v[:, :-1]) & (v[:, 1:] > 0) & (c[:, 1:] < c[:, :-1])).any(1)
    if wrong.any():
        cw = cand[wrong]
        order[wrong] = np.lexsort((np.where(cw >= 0, cw, n), -vals[wrong]), axis=1)
        v[wrong], c[wrong] = (
            np.take_along_axis(vals[wrong], order[wrong], 1),
            np.take_along_axis(cw, order[wrong], 1),
        )
    return c[:, :k], v[:, :k]


def _topk_lowest_index(sim: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest values per row; ties at the k-th value go to the lowest
    column index, so the choice depends on the values alone (never on how a selection
    algorithm happens to visit them), which keeps incremental rows equal to rebuilt ones."""
    kth = np.take_along_axis(sim, np.argpartition(-sim, k - 1, axis=1)[:, k - 1 : k], axis=1)
    above = sim > kth
    tied = sim == kth
    need = k - above.sum(1, keepdims=True)
    chosen = above | tied
    crowded = tied.sum(1) > need[:, 0]  # more ties at the k-th value than free slots
    if crowded.any():
        t = tied[crowded]
        chosen[crowded] = above[crowded] | (t & (np.cumsum(t, axis=1) <= need[crowded]))
    return np.nonzero(chosen)[1].reshape(sim.shape[0], k)


def fit(
    data: InteractionData,
    cfg: ItemKNNSettings,
    *,
    seed: int,
    init: Any = None,
    max_epochs: int | None = None,
) -> tuple[ItemKNN, dict[str, Any]]:
    """``recunlearn.models.MODELS``' entry: the index from ``model.knn_*`` (a function of the
    data alone)."""
    t0 = time.perf_counter()
    model = ItemKNN(data.user_keys, data.train, k=cfg.knn_k, shrink=cfg.knn_shrink)
    return model, {"fit_seconds": time.perf_counter() - t0}
