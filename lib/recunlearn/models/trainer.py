"""One epoch loop for the gradient-trained models: ``TorchTrainer``.

BPR-MF, LightGCN, NCF and the attention aggregator differ in their module, their loss and
what one batch is; they share the loop: Adam over the module's parameters, one optimiser
step per batch, validation every ``eval_every`` epochs on the validation split (never on
test), the best state kept, a stop after ``patience`` validations without improvement.

The pairwise sub-models plug in through ``PairwiseModule`` (what ``fit_bpr`` needs of a
module, stated instead of probed) and draw their batches with ``PairSampler``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from recunlearn.models.base import Recommender

# one optimiser step per item: (the batch's loss, how many training examples it covers)
Batches = Callable[[int], Iterable[tuple[torch.Tensor, int]]]


@dataclass
class TrainResult:
    """What a ``TorchTrainer.fit`` did: epochs run, the best validation score and its epoch
    (-1.0 and 0 when nothing was validated), and per validation (epoch, mean training loss,
    score); a validation before the first epoch has loss None."""

    epochs: int = 0
    best_epoch: int = 0
    best: float = -1.0
    curve: list[tuple[int, float | None, float]] = field(default_factory=list)


@dataclass(frozen=True)
class TorchTrainer:
    """The epoch loop (see the module's note). ``validate_first`` scores the initial state
    too, so a module that only gets worse keeps its initial parameters (the attention
    aggregator starts from uniform weights)."""

    lr: float
    max_epochs: int
    patience: int
    eval_every: int = 1
    validate_first: bool = False
    # adam: every parameter's rows each step; sparse_adam: only the rows of the batch (the
    # module's gradients must be sparse: embedding lookups with sparse=True)
    optimizer: Literal["adam", "sparse_adam"] = "adam"

    def fit(
        self,
        module: nn.Module,
        batches: Batches,
        validate: Callable[[], float] | None,
        *,
        params: Iterable[nn.Parameter] | None = None,
    ) -> TrainResult:
        """Train ``module`` (Adam over ``params``, default its parameters) on the batches
        ``batches(epoch)`` yields; with ``validate`` (no validation data: None), load the best
        validated state back into ``module`` at the end."""
        chosen = list(module.parameters() if params is None else params)
        opt: torch.optim.Optimizer
        if self.optimizer == "sparse_adam":
            opt = torch.optim.SparseAdam(chosen, lr=self.lr)
        elif self.optimizer == "adam":
            opt = torch.optim.Adam(chosen, lr=self.lr)
        else:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: adam or sparse_adam")
        out = TrainResult()
        best_state = None
        bad = 0
        if validate is not None and self.validate_first:
            out.best = validate()
            best_state = copy.deepcopy(module.state_dict())
            out.curve.append((0, None, round(out.best, 5)))
        for epoch in range(1, self.max_epochs + 1):
            out.epochs = epoch
            total, seen = 0.0, 0
            for loss, n in batches(epoch):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * n
                seen += n
            if validate is None:
                continue
            if epoch % self.eval_every == 0 or epoch == self.max_epochs:
                score = validate()
                out.curve.append((epoch, round(total / max(seen, 1), 5), round(score, 5)))
                if score > out.best:
                    out.best, out.best_epoch, bad = score, epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
        if best_state is not None:
            module.load_state_dict(best_state)
        return out


class PairwiseModule(Protocol):
    """A module ``fit_bpr`` trains on (user, positive, negatives) triples."""

    negatives: int  # negatives sampled per positive

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def loss(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reg: float) -> torch.Tensor:
        """The batch's loss; ``j`` holds ``negatives`` negatives per positive, user-major."""
        ...

    def scorer(self) -> Callable[[np.ndarray], torch.Tensor]:
        """Scores (rows, n_items) of training rows, for validation (called under no_grad)."""
        ...

    def warm_start(self, keys: np.ndarray, init: Any) -> None:
        """Start from ``init``'s (a trained model of the same kind) items and known users."""
        ...

    def model(self, user_keys: np.ndarray) -> Recommender:
        """The trained Recommender."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class PairSampler:
    """Per epoch, the training pairs in a random order in batches, each positive with
    ``negatives`` items drawn uniformly; a drawn item the user holds is redrawn (at most three
    times, only those). Every draw comes from ``generator``: the same seed and data give the
    same batches."""

    def __init__(
        self, train: Any, *, batch_size: int, negatives: int, generator: torch.Generator
    ) -> None:
        coo = train.tocoo()
        self.n_items = int(train.shape[1])
        self.pos_u = torch.from_numpy(coo.row.astype(np.int64))
        self.pos_i = torch.from_numpy(coo.col.astype(np.int64))
        self.linear = torch.sort(self.pos_u * self.n_items + self.pos_i).values
        self.nnz = len(self.pos_u)
        self.batch_size, self.negatives, self.g = batch_size, negatives, generator

    def is_positive(self, u: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        lin = u * self.n_items + j
        at = torch.searchsorted(self.linear, lin).clamp(max=self.nnz - 1)
        return self.linear[at] == lin

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(users, positives, negatives) per batch for one epoch."""
        g, n_neg = self.g, self.negatives
        perm = torch.randperm(self.nnz, generator=g)
        for s in range(0, self.nnz, self.batch_size):
            idx = perm[s : s + self.batch_size]
            u, i = self.pos_u[idx], self.pos_i[idx]
            j = torch.randint(self.n_items, (len(idx) * n_neg,), generator=g)
            uj = u if n_neg == 1 else u.repeat_interleave(n_neg)
            clash = torch.nonzero(self.is_positive(uj, j)).flatten()
            for _ in range(3):
                if len(clash) == 0:
                    break
                j[clash] = torch.randint(self.n_items, (len(clash),), generator=g)
                clash = clash[self.is_positive(uj[clash], j[clash])]
            yield u, i, j
