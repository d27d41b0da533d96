"""Item-based kNN with an exact incremental top-k index (a model-specific exact unlearning
method; see FIELD.md 3.3).

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

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recunlearn.models.base import Recommender
from recunlearn.models.data import binary_csr


DENSE_ITEMS = 6000  # up to this many items the counts are a dense array (6000^2 x 8 B = 288 MB)


class ItemKNN(Recommender):
    def __init__(self, user_keys: np.ndarray, x: sp.csr_matrix, *, k: int = 50, shrink: float = 0.0,
                 chunk: int = 1024, dense_items: int = DENSE_ITEMS, meta: dict[str, Any] | None = None) -> None:
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
        self.cooc: np.ndarray | sp.csr_matrix = cooc.toarray() if self.n_items <= dense_items else cooc
        self.counts = cooc.diagonal().copy()  # C_ii: each item's number of users
        self.neighbours = np.full((self.n_items, self.k), -1, dtype=np.int64)
        self.sims = np.zeros((self.n_items, self.k))  # float64: exactly what a rebuild computes
        self._recompute(np.arange(self.n_items))

    # ---- the index
    def _recompute(self, items: np.ndarray) -> None:
        """Top-k neighbours of ``items`` from the current counts (one code path for build and
        update, so both give identical rows)."""
        norm = np.sqrt(self.counts)
        for s in range(0, len(items), self.chunk):
            rows = np.asarray(items[s:s + self.chunk])
            c = self._count_rows(rows)
            denom = norm[rows][:, None] * norm[None, :] + self.shrink
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = np.where(denom > 0, c / denom, 0.0)
            sim[np.arange(len(rows)), rows] = 0.0  # never its own neighbour
            part = _topk_lowest_index(sim, self.k)
            vals = np.take_along_axis(sim, part, axis=1)
            order = np.lexsort((part, -vals), axis=1)  # by similarity, then item index
            part, vals = np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1)
            part[vals <= 0] = -1
            self.neighbours[rows] = part
            self.sims[rows] = np.where(vals > 0, vals, 0.0)
        self._matrix = None

    def _count_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.cooc[rows] if isinstance(self.cooc, np.ndarray) else self.cooc[rows].toarray()

    def _count_block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if isinstance(self.cooc, np.ndarray):
            return self.cooc[np.ix_(rows, cols)]
        return self.cooc[:, cols][rows].toarray()

    def _subtract(self, delta: sp.csr_matrix) -> None:
        d = delta.tocoo()
        if isinstance(self.cooc, np.ndarray):
            self.cooc[d.row, d.col] -= d.data  # (row, col) pairs are unique in a COO of a CSR
        else:
            self.cooc = (self.cooc - delta.astype(np.float64)).tocsr()
            self.cooc.eliminate_zeros()
        self.counts -= delta.diagonal()

    def similarity_matrix(self) -> sp.csr_matrix:
        """(n_items, n_items) sparse S with S[i, j] = sim(i, j) for j among i's neighbours."""
        if self._matrix is None:
            keep = self.neighbours >= 0
            rows = np.repeat(np.arange(self.n_items), keep.sum(1))
            self._matrix = sp.csr_matrix((self.sims[keep].astype(np.float32), (rows, self.neighbours[keep])),
                                         shape=(self.n_items, self.n_items))
        return self._matrix

    def update_rows(self, rows: np.ndarray, new_rows: sp.csr_matrix) -> dict[str, int]:
        """Replace users ``rows`` of X by ``new_rows`` (a subset of their old items) and repair
        the index. Returns how many counts and index rows changed."""
        rows = np.asarray(rows, dtype=np.int64)
        old, new = self.x[rows], binary_csr(new_rows)
        if ((new - old.multiply(new)).nnz) != 0:
            raise ValueError("update_rows only removes interactions; it cannot add any")
        stats = self._repair(old, new)
        self.x = _replace_rows(self.x, rows, new)
        return stats

    def _repair(self, old: sp.csr_matrix, new: sp.csr_matrix) -> dict[str, int]:
        """Counts and index after some users' rows went from ``old`` to ``new`` (X untouched)."""
        delta = (old.T @ old - new.T @ new).tocsr()
        delta.eliminate_zeros()
        if delta.nnz == 0:
            return {"counts_changed": 0, "index_rows_recomputed": 0, "index_rows_merged": 0}
        moved = np.unique(delta.nonzero()[0])  # items whose counts changed
        self._subtract(delta)
        fallback, merged = self._merge_untouched(moved)
        self._recompute(np.union1d(moved, fallback))
        return {"counts_changed": int(delta.nnz), "index_rows_recomputed": int(len(moved) + len(fallback)),
                "index_rows_merged": int(merged)}

    def _merge_untouched(self, moved: np.ndarray) -> tuple[np.ndarray, int]:
        """Repair the lists of the items whose own counts did not change, without scanning
        every item. Returns the rows left to a full recompute and how many were merged.

        A deletion only lowers counts. For such an item i, only its similarities to the moved
        items change, and they can only grow (a moved item's norm fell, C_id did not change):
        the new list is the top-k of the old list and the moved items. A row needs work iff a
        moved item is in its list or now reaches its last value. One case goes to a full
        recompute: the last value did not move and a moved item holds it, where an item
        outside both could tie there and win on a lower index."""
        others = np.setdiff1d(np.arange(self.n_items), moved)
        if len(moved) == 0 or len(others) == 0:
            return np.zeros(0, np.int64), 0
        norm = np.sqrt(self.counts)
        c = self._count_block(others, moved)  # (items, |moved|): the only counts needed
        with np.errstate(divide="ignore", invalid="ignore"):
            new_sim = np.where(c > 0, c / (norm[others][:, None] * norm[moved][None, :] + self.shrink), 0.0)
        old = self.neighbours[others]
        last = self.sims[others, -1]
        work = np.isin(old, moved).any(1) | ((new_sim > 0) & (new_sim >= last[:, None])).any(1)
        rows, old, new_sim, last = others[work], old[work], new_sim[work], last[work]
        # candidates: the old list (a moved item or a padding slot in it is dropped: -1 sorts
        # last) and the moved items with their new similarities
        keep_old = np.where((old < 0) | np.isin(old, moved), -1.0, self.sims[rows])
        cand = np.concatenate([np.maximum(old, 0), np.broadcast_to(moved, (len(rows), len(moved)))], 1)
        sim = np.concatenate([keep_old, new_sim], 1)
        order = np.lexsort((cand, -sim), axis=1)[:, :self.k]
        top, vals = np.take_along_axis(cand, order, 1), np.take_along_axis(sim, order, 1)
        risky = (last > 0) & (vals[:, -1] == last) & ((vals == vals[:, -1:]) & np.isin(top, moved)).any(1)
        ok = ~risky
        top[vals <= 0] = -1
        self.neighbours[rows[ok]] = top[ok]
        self.sims[rows[ok]] = np.maximum(vals[ok], 0.0)
        self._matrix = None
        return rows[risky], int(ok.sum())

    def forget_users(self, keys: np.ndarray) -> dict[str, int]:
        """Remove users entirely: their rows and keys leave the model."""
        rows = self.rows_of(keys)
        rows = rows[rows >= 0]
        stats = self._repair(self.x[rows], sp.csr_matrix((len(rows), self.n_items), dtype=np.float32))
        keep = np.ones(len(self.user_keys), bool)
        keep[rows] = False
        self.user_keys, self.x = self.user_keys[keep], self.x[keep]
        return {**stats, "users_removed": int(len(rows))}

    def forget_pairs(self, user_rows: np.ndarray, items: np.ndarray) -> dict[str, int]:
        """Remove single interactions (user row, item)."""
        user_rows, items = np.asarray(user_rows, np.int64), np.asarray(items, np.int64)
        rows = np.unique(user_rows)
        drop = sp.csr_matrix((np.ones(len(items), np.float32), (np.searchsorted(rows, user_rows), items)),
                             shape=(len(rows), self.n_items))
        new = self.x[rows] - self.x[rows].multiply(drop > 0)
        new.eliminate_zeros()
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
        x = self.x.tocoo()
        return {"kind": "itemknn", "user_keys": self.user_keys.tolist(), "k": self.k,
                "shrink": self.shrink, "dense_items": self.dense_items, "shape": list(x.shape),
                "rows": torch.from_numpy(x.row.astype(np.int64)),
                "cols": torch.from_numpy(x.col.astype(np.int64)), "meta": self.meta}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ItemKNN:
        r, c = state["rows"].numpy(), state["cols"].numpy()
        x = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=tuple(state["shape"]))
        return cls(np.asarray(state["user_keys"], dtype=str), x, k=state["k"], shrink=state["shrink"],
                   dense_items=state.get("dense_items", DENSE_ITEMS), meta=state.get("meta"))


def _topk_lowest_index(sim: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest values per row; ties at the k-th value go to the lowest
    column index, so the choice depends on the values alone (never on how a selection
    algorithm happens to visit them), which keeps incremental rows equal to rebuilt ones."""
    kth = np.take_along_axis(sim, np.argpartition(-sim, k - 1, axis=1)[:, k - 1:k], axis=1)
    above = sim > kth
    tied = sim == kth
    need = k - above.sum(1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
    return np.nonzero(chosen)[1].reshape(sim.shape[0], k)


def _replace_rows(x: sp.csr_matrix, rows: np.ndarray, new: sp.csr_matrix) -> sp.csr_matrix:
    keep = np.ones(x.shape[0], bool)
    keep[rows] = False
    base = sp.diags(keep.astype(np.float32)) @ x
    placed = sp.csr_matrix((np.ones(new.nnz, np.float32), (rows[new.tocoo().row], new.tocoo().col)),
                           shape=x.shape)
    out = (base + placed).tocsr()
    out.eliminate_zeros()
    out.sort_indices()
    return out
