"""Most-popular: every user is scored by the items' training counts.

The baseline every recommender paper reports, and the smallest ``Forgettable`` model: its one
parameter vector is a count per item, so forgetting users, items or single interactions is
counting down, and the result equals a refit on the retained rows exactly (integer counts).
It keeps its training rows (binary CSR) to know what a forgotten user contributed.
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
    without_columns,
    without_pairs,
)
from recunlearn.models.base import Recommender

if TYPE_CHECKING:
    from recunlearn.config import ModelSettings
    from recunlearn.data.interactions import InteractionData


class Popularity(Recommender):
    def __init__(
        self, user_keys: np.ndarray, x: sp.csr_matrix, meta: dict[str, Any] | None = None
    ) -> None:
        self.user_keys = np.asarray(user_keys).astype(str)
        self.x = binary_csr(x)
        self.n_items = int(x.shape[1])
        self.meta = dict(meta or {})

    @property
    def counts(self) -> np.ndarray:
        """Training interactions per item."""
        return np.asarray(self.x.sum(axis=0)).ravel()

    @property
    def n_train(self) -> int:
        return int(self.x.nnz)

    # ---- Forgettable
    def forget_users(self, keys: np.ndarray) -> dict[str, Any]:
        rows = self.held_rows(keys)
        self.user_keys, self.x = drop_rows(self.user_keys, self.x, rows)
        return {"users_removed": int(len(rows))}

    def forget_pairs(self, user_rows: np.ndarray, items: np.ndarray) -> dict[str, Any]:
        before = self.x.nnz
        rows, _, new = without_pairs(self.x, user_rows, items)
        self.x = replace_rows(self.x, rows, new)
        return {"pairs_removed": int(before - self.x.nnz)}

    def forget_items(self, items: np.ndarray) -> dict[str, Any]:
        before = self.x.nnz
        self.x = without_columns(self.x, items)
        return {"pairs_removed": int(before - self.x.nnz)}

    # ---- Recommender
    def score(self, rows: np.ndarray) -> torch.Tensor:
        c = torch.from_numpy(self.counts.astype(np.float32))
        return c.expand(len(np.asarray(rows)), self.n_items).clone()

    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        return self.score(np.arange(history.shape[0]))

    def state(self) -> dict[str, Any]:
        return {
            "kind": "popularity",
            "user_keys": self.user_keys.tolist(),
            **csr_state(self.x),
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Popularity:
        return cls(
            np.asarray(state["user_keys"], dtype=str), csr_from_state(state), meta=state.get("meta")
        )


def fit(
    data: InteractionData,
    cfg: ModelSettings,
    *,
    seed: int,
    init: Any = None,
    max_epochs: int | None = None,
) -> tuple[Popularity, dict[str, Any]]:
    """``recunlearn.models.MODELS``' entry: counts of ``data.train`` (no seed, no warm start)."""
    t0 = time.perf_counter()
    model = Popularity(data.user_keys, data.train)
    return model, {"fit_seconds": time.perf_counter() - t0}
