"""Interaction matrices for one shard (or the whole data set), keyed by sorted user keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import scipy.sparse as sp
import torch


def binary_csr(m: sp.spmatrix, dtype: type = np.float32) -> sp.csr_matrix:
    """A copy of ``m`` as a 0/1 CSR matrix: duplicates summed, explicit zeros dropped (before
    the values become 1, so a stored 0 never counts as an interaction), indices sorted."""
    out = sp.csr_matrix(m, dtype=dtype, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.data[:] = 1
    out.sort_indices()
    return out


def without_pairs(
    x: sp.csr_matrix, user_rows: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """The rows of ``x`` that hold any of the pairs (user row, item), as they are and without
    those pairs: ``(rows, old, new)``; pairs ``x`` does not hold are ignored."""
    user_rows, items = np.asarray(user_rows, np.int64), np.asarray(items, np.int64)
    rows = np.unique(user_rows)
    drop = sp.csr_matrix(
        (np.ones(len(items), np.float32), (np.searchsorted(rows, user_rows), items)),
        shape=(len(rows), x.shape[1]),
    )
    old = x[rows]
    gone = old.multiply(drop > 0).tocsr()
    gone.eliminate_zeros()
    held = np.flatnonzero(np.diff(gone.indptr) > 0)
    old = old[held]
    new = (old - gone[held]).tocsr()
    new.eliminate_zeros()
    return rows[held], old, new


def without_columns(x: sp.csr_matrix, items: np.ndarray) -> sp.csr_matrix:
    """``x`` with every entry in the columns ``items`` removed (rows kept, also when emptied)."""
    mask = np.ones(x.shape[1], np.float32)
    mask[np.asarray(items, np.int64)] = 0.0
    out = (x @ sp.diags(mask)).tocsr()
    out.eliminate_zeros()
    return out


def csr_state(x: sp.csr_matrix) -> dict[str, Any]:
    """A binary matrix as checkpoint state: its shape and its entries' (row, column)."""
    coo = x.tocoo()
    return {
        "shape": list(coo.shape),
        "rows": torch.from_numpy(coo.row.astype(np.int64)),
        "cols": torch.from_numpy(coo.col.astype(np.int64)),
    }


def csr_from_state(state: dict[str, Any]) -> sp.csr_matrix:
    """Inverse of :func:`csr_state`."""
    r, c = state["rows"].numpy(), state["cols"].numpy()
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=tuple(state["shape"]))


def drop_rows(
    keys: np.ndarray, x: sp.csr_matrix, rows: np.ndarray
) -> tuple[np.ndarray, sp.csr_matrix]:
    """``keys`` and the rows of ``x`` without ``rows``."""
    keep = np.ones(len(keys), bool)
    keep[rows] = False
    return keys[keep], x[keep]


def replace_rows(x: sp.csr_matrix, rows: np.ndarray, new: sp.csr_matrix) -> sp.csr_matrix:
    """``x`` with its rows ``rows`` replaced by the rows of ``new`` (binary; sorted indices)."""
    keep = np.ones(x.shape[0], bool)
    keep[rows] = False
    base = sp.diags(keep.astype(np.float32)) @ x
    placed = sp.csr_matrix(
        (np.ones(new.nnz, np.float32), (rows[new.tocoo().row], new.tocoo().col)), shape=x.shape
    )
    out = (base + placed).tocsr()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def has_pairs(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether each (row, col) is stored (non-zero) in ``m``; vectorised, any number of pairs."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0, dtype=bool)
    # only the rows asked about: their stored columns, as sorted keys (local row, col)
    urows, local = np.unique(rows, return_inverse=True)
    sub = m[urows].tocoo()
    keep = sub.data != 0
    stored = np.sort(sub.row.astype(np.int64)[keep] * m.shape[1] + sub.col[keep])
    want = local.astype(np.int64) * m.shape[1] + cols
    if len(stored) == 0:
        return np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(stored, want), len(stored) - 1)
    return stored[at] == want


def _encoded(tbl: Any, name: str) -> Any:
    """A column of an Arrow table as one dictionary array (distinct values + int indices)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = tbl.column(name).combine_chunks()
    return col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)


@dataclass(frozen=True)
class InteractionData:
    user_keys: np.ndarray  # (n_users,) sorted unique keys: row i of every matrix
    train: sp.csr_matrix  # (n_users, n_items) binary
    valid: sp.csr_matrix
    test: sp.csr_matrix

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @classmethod
    def from_columns(
        cls, user_key: np.ndarray, item_idx: np.ndarray, split: np.ndarray, n_items: int
    ) -> InteractionData:
        """Build from parallel columns. Users without a training row are left out."""
        user_key = np.asarray(user_key).astype(str)
        item_idx = np.asarray(item_idx, dtype=np.int64)
        split = np.asarray(split).astype(str)
        is_train = split == "train"
        keys = np.unique(user_key[is_train])
        rows = np.searchsorted(keys, user_key)
        rows = np.clip(rows, 0, max(len(keys) - 1, 0))
        known = (keys[rows] == user_key) if len(keys) else np.zeros(len(user_key), bool)

        def mat(mask: np.ndarray) -> sp.csr_matrix:
            m = mask & known
            data = np.ones(int(m.sum()), dtype=np.float32)
            out = sp.csr_matrix((data, (rows[m], item_idx[m])), shape=(len(keys), n_items))
            out.sum_duplicates()
            out.data[:] = 1.0
            out.sort_indices()
            return out

        return cls(keys, mat(is_train), mat(split == "valid"), mat(split == "test"))

    @classmethod
    def from_batches(cls, batches: Iterable[Any], n_items: int) -> InteractionData:
        """Build from Arrow tables (or record batches) of ``user_key``, ``item_idx`` and
        ``split``, one at a time: the same result as :meth:`from_columns` on their
        concatenation, without ever holding the rows' keys as Python or numpy strings.

        Each batch's keys are dictionary-encoded by Arrow and only its distinct keys map to
        the user numbers; what is kept per row is an int32 user, an int32 item and an int8
        split. Memory is one batch plus 9 bytes a row plus the distinct keys; the matrices
        take int32 indices."""
        import pyarrow as pa

        number: dict[str, int] = {}
        split_code = {"train": 0, "valid": 1, "test": 2}
        users: list[np.ndarray] = []
        items: list[np.ndarray] = []
        splits: list[np.ndarray] = []
        for batch in batches:
            if batch.num_rows == 0:
                continue
            tbl = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])

            keys = _encoded(tbl, "user_key")
            local = np.fromiter(
                (number.setdefault(k, len(number)) for k in keys.dictionary.to_pylist()),
                dtype=np.int32,
                count=len(keys.dictionary),
            )
            users.append(local[keys.indices.to_numpy(zero_copy_only=False)])
            sp_col = _encoded(tbl, "split")
            codes = np.array(
                [split_code.get(str(v), -1) for v in sp_col.dictionary.to_pylist()], dtype=np.int8
            )
            splits.append(codes[sp_col.indices.to_numpy(zero_copy_only=False)])
            items.append(np.asarray(tbl.column("item_idx").to_numpy(), dtype=np.int32))
        user = np.concatenate(users) if users else np.zeros(0, np.int32)
        item = np.concatenate(items) if items else np.zeros(0, np.int32)
        split = np.concatenate(splits) if splits else np.zeros(0, np.int8)
        del users, items, splits
        # users with a training row, numbered in key order
        trained = np.zeros(len(number), dtype=bool)
        trained[user[split == 0]] = True
        names = np.array(list(number), dtype=str) if number else np.zeros(0, dtype="<U1")
        del number
        kept = np.flatnonzero(trained)
        order = kept[np.argsort(names[kept], kind="stable")]
        row_of = np.full(len(names), -1, dtype=np.int32)
        row_of[order] = np.arange(len(order), dtype=np.int32)
        row = row_of[user]
        del user

        def mat(code: int) -> sp.csr_matrix:
            m = (split == code) & (row >= 0)
            ones = np.ones(int(m.sum()), dtype=np.float32)
            return binary_csr(sp.coo_matrix((ones, (row[m], item[m])), (len(order), n_items)))

        return cls(names[order], mat(0), mat(1), mat(2))

    def subset(self, rows: np.ndarray) -> InteractionData:
        """The users at ``rows`` (indices in any order, or a boolean mask), keys kept sorted."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else np.sort(rows)
        return InteractionData(
            self.user_keys[rows], self.train[rows], self.valid[rows], self.test[rows]
        )

    def without_users(self, keys: np.ndarray) -> InteractionData:
        return self.subset(~np.isin(self.user_keys, np.asarray(keys).astype(str)))

    def without_items(self, items: np.ndarray) -> InteractionData:
        """Every training interaction with ``items`` removed (users kept, also when emptied)."""
        return InteractionData(
            self.user_keys, without_columns(self.train, items), self.valid, self.test
        )

    def without_pairs(self, keys: np.ndarray, items: np.ndarray) -> InteractionData:
        """The training interactions (key, item) removed (absent pairs ignored; users kept)."""
        keys, items = np.asarray(keys).astype(str), np.asarray(items, np.int64)
        pos = np.clip(np.searchsorted(self.user_keys, keys), 0, max(self.n_users - 1, 0))
        held = self.user_keys[pos] == keys if self.n_users else np.zeros(len(keys), bool)
        rows, _, new = without_pairs(self.train, pos[held], items[held])
        train = replace_rows(self.train, rows, new)
        return InteractionData(self.user_keys, train, self.valid, self.test)
