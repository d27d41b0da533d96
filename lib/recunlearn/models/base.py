"""The sub-model interface, in the manner of implicit's ``RecommenderBase``.

A model maps pseudonymous ``user_keys`` (sorted) to rows and scores all items for a user.
Users that the model was not trained on can still be scored from their interaction history
by ``fold_in``, which never changes the model's parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch


def lookup_rows(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in ``sorted_keys``, -1 where absent."""
    keys = np.asarray(keys).astype(str)
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, pos, -1)


class Recommender(ABC):
    """Base class of every sub-model."""

    user_keys: np.ndarray  # (n_users,) sorted pseudonymous keys; row i is user_keys[i]
    n_items: int
    meta: dict[str, Any]

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, -1 where the model does not know the user."""
        return lookup_rows(self.user_keys, keys)

    def held_rows(self, keys: np.ndarray) -> np.ndarray:
        """The sorted rows of the keys the model knows (each once)."""
        rows = self.rows_of(keys)
        return np.unique(rows[rows >= 0])

    def knows(self, keys: np.ndarray) -> np.ndarray:
        """Whether the model holds a trained vector for each key."""
        return self.rows_of(keys) >= 0

    def score_users(self, keys: np.ndarray, history: sp.csr_matrix) -> torch.Tensor:
        """Scores (len(keys), n_items) of users by key, as served: the trained vector where the
        model knows the user, a fold-in of their ``history`` row otherwise. The interface every
        evaluation and audit function uses, shared with the sharded ensemble."""
        rows = self.rows_of(keys)
        known = rows >= 0
        with torch.no_grad():
            if known.all():
                return self.score(rows)
            out = torch.empty(len(rows), self.n_items)
            if known.any():
                out[torch.from_numpy(np.flatnonzero(known))] = self.score(rows[known])
            out[torch.from_numpy(np.flatnonzero(~known))] = self.score_history(
                history[np.flatnonzero(~known)]
            )
            return out

    @abstractmethod
    def score(self, rows: np.ndarray) -> torch.Tensor:
        """Scores (len(rows), n_items) for trained users ``rows``."""

    @abstractmethod
    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        """Scores for users given only their interaction rows (fold-in)."""

    def recommend(
        self, rows: np.ndarray, n: int, seen: sp.csr_matrix | None = None, exclude_seen: bool = True
    ) -> np.ndarray:
        """Top-``n`` item indices per user row; ``seen`` rows are excluded when asked."""
        from recunlearn.metrics import topk_excluding

        scores = self.score(np.asarray(rows))
        if exclude_seen and seen is not None:
            return topk_excluding(scores, seen, n).numpy()
        return torch.topk(scores, k=n, dim=1).indices.numpy()

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (tensors, keys, metadata)."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Recommender:
        """Inverse of :meth:`state`."""

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Recommender:
        return cls.from_state(torch.load(path, weights_only=True))


class FactorModel(Recommender):
    """A model that serves ``score(u, i) = user[u] . item[i] + bias[i]`` (BPR-MF, LightGCN):
    its user vectors live in one space with a fold-in into it, so the fitted aggregators
    (attention, learned weights), the attribute edits and the fast tier work on any of them.
    ``ModelKind.factor`` marks these kinds in the registry."""

    user: torch.Tensor  # (n_users, d)
    item: torch.Tensor  # (n_items, d)
    bias: torch.Tensor  # (n_items,)
    fold_in_reg: float  # the ridge of the fold-in's least squares

    def score(self, rows: np.ndarray) -> torch.Tensor:
        return (
            self.user[torch.as_tensor(np.asarray(rows), dtype=torch.long)] @ self.item.T + self.bias
        )

    @abstractmethod
    def fold_in(self, history: sp.csr_matrix) -> torch.Tensor:
        """User vectors (n, d) from interaction rows alone; the parameters never change."""

    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        return self.fold_in(history) @ self.item.T + self.bias


@runtime_checkable
class Forgettable(Protocol):
    """A sub-model that forgets exactly in place: after ``forget_*`` it equals (to a tolerance
    its tests state) the model refit without the forgotten rows. WMF, item-kNN and EASE."""

    user_keys: np.ndarray

    @property
    def n_train(self) -> int:
        """Training interactions the model holds."""

    def rows_of(self, keys: np.ndarray) -> np.ndarray: ...

    def forget_users(self, keys: np.ndarray) -> dict[str, Any]:
        """Forget every interaction of these users (keys), and the users themselves."""

    def forget_items(self, items: np.ndarray) -> dict[str, Any]:
        """Forget every interaction with these items."""

    def forget_pairs(self, user_rows: np.ndarray, items: np.ndarray) -> dict[str, Any]:
        """Forget single (user row, item) interactions (absent pairs change nothing)."""
