"""Baselines a user would run instead of recunlearn, wrapped to be scored by recunlearn's own
evaluator: implicit's ALS (Hu, Koren and Volinsky's implicit ALS as the ``implicit`` library
implements it; a benchmark-only dependency, the ``bench`` extra). Popularity and EASE are
recunlearn sub-models already (``recunlearn.models``), so the benchmarks use those.

Every baseline here is tuned on the validation split only: fit on the training rows, scored
on the validation rows (training items excluded), the best setting then scored once on the
test rows."""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch

from recunlearn.data.interactions import InteractionData, binary_csr
from recunlearn.metrics import evaluate
from recunlearn.models.base import Recommender

TOP = 20


def valid_ndcg(model: Any, data: InteractionData, k: int = TOP) -> float:
    """Mean NDCG@k on the validation split of the users that have validation rows, scored from
    the training rows with training items excluded: what every setting is chosen by."""
    m = evaluate(
        lambda r: model.score_users(data.user_keys[r], data.train[r]),
        np.arange(data.n_users),
        data.train,
        data.valid,
        k=k,
    )
    return round(m[f"ndcg@{k}"], 5)


class ImplicitALS(Recommender):
    """implicit's ALS factors, for users in ``user_keys``; an unknown user is folded in by the
    same least squares implicit's ``recalculate_user`` solves (confidence ``alpha`` on observed
    items, 1 elsewhere)."""

    def __init__(
        self,
        user_keys: np.ndarray,
        user: np.ndarray,
        item: np.ndarray,
        *,
        reg: float,
        alpha: float,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.user_keys = np.asarray(user_keys).astype(str)
        self.user = torch.from_numpy(np.ascontiguousarray(user, dtype=np.float32))
        self.item = torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))
        self.n_items = int(self.item.shape[0])
        self.reg, self.alpha = float(reg), float(alpha)
        self.meta = dict(meta or {})

    def score(self, rows: np.ndarray) -> torch.Tensor:
        return self.user[torch.as_tensor(np.asarray(rows), dtype=torch.long)] @ self.item.T

    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        y = self.item.double().numpy()
        gram = y.T @ y + self.reg * np.eye(y.shape[1])
        h = binary_csr(history)
        out = np.zeros((h.shape[0], y.shape[1]))
        for r in range(h.shape[0]):  # one small solve per folded-in user (few users)
            yi = y[h.indices[h.indptr[r] : h.indptr[r + 1]]]
            a = gram + (self.alpha - 1.0) * yi.T @ yi
            out[r] = np.linalg.solve(a, self.alpha * yi.sum(0))
        return torch.from_numpy(out.astype(np.float32)) @ self.item.T

    def state(self) -> dict[str, Any]:
        return {
            "kind": "implicit-als",
            "user_keys": self.user_keys.tolist(),
            "user": self.user,
            "item": self.item,
            "reg": self.reg,
            "alpha": self.alpha,
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ImplicitALS:
        return cls(
            np.asarray(state["user_keys"], dtype=str),
            state["user"].numpy(),
            state["item"].numpy(),
            reg=state["reg"],
            alpha=state["alpha"],
            meta=state.get("meta"),
        )


def fit_implicit_als(
    data: InteractionData,
    *,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int,
    seed: int,
) -> tuple[ImplicitALS, float]:
    """implicit's CPU ALS on the binary training matrix; returns the model and its fit time."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):  # implicit parallelises over users itself
        als = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        als.fit(binary_csr(data.train).astype(np.float32), show_progress=False)
    model = ImplicitALS(
        data.user_keys, als.user_factors, als.item_factors, reg=regularization, alpha=alpha
    )
    return model, time.perf_counter() - t0


def _beyond(values: list[Any], best: Any) -> Any:
    """The next value past the grid's edge that ``best`` sits on, one geometric step out."""
    vals = sorted(values)
    if best == vals[-1]:
        new = vals[-1] * vals[-1] / vals[-2]
    else:
        new = vals[0] * vals[0] / vals[1]
    return max(1, round(new)) if isinstance(best, int) else float(f"{new:.6g}")


def grid_search(
    grid: dict[str, list[Any]],
    fit: Callable[[dict[str, Any]], tuple[Any, float]],
    score: Callable[[Any], float],
    *,
    widen: int = 3,
) -> tuple[Any, dict[str, Any]]:
    """Every setting of ``grid`` fit and scored (validation NDCG); then, up to ``widen``
    times, each setting whose best value lies on the grid's edge is tried one geometric step
    further out (the other settings at their best), so a baseline is not held back by a grid
    drawn too narrow. Returns the best model and the search (``at_grid_edge``: the settings
    still on an edge after widening)."""
    names = sorted(grid)
    grid = {n: list(v) for n, v in grid.items()}
    tried: list[dict[str, Any]] = []
    best: tuple[dict[str, Any], Any] | None = None

    def run(setting: dict[str, Any]) -> None:
        nonlocal best
        model, secs = fit(setting)
        tried.append({**setting, "valid_ndcg": score(model), "fit_seconds": round(secs, 3)})
        if best is None or tried[-1]["valid_ndcg"] > best[0]["valid_ndcg"]:
            best = (tried[-1], model)

    for values in itertools.product(*(grid[n] for n in names)):
        run(dict(zip(names, values, strict=True)))
    assert best is not None, "an empty grid"

    def edges() -> list[str]:
        assert best is not None
        return [n for n in names if len(grid[n]) > 1 and best[0][n] in (min(grid[n]), max(grid[n]))]

    for _ in range(widen):
        out = edges()
        if not out:
            break
        for n in out:
            assert best is not None
            chosen = {m: best[0][m] for m in names}
            value = _beyond(grid[n], chosen[n])
            grid[n].append(value)
            run({**chosen, n: value})
    return best[1], {"chosen": best[0], "grid": tried, "at_grid_edge": edges()}


def tune_implicit_als(
    data: InteractionData, grid: dict[str, list[Any]], *, seed: int
) -> tuple[ImplicitALS, dict[str, Any]]:
    """implicit's ALS over ``grid`` (factors, regularization, alpha, iterations), fit on the
    training rows and scored on the validation rows, widened past the grid's edges where the
    best lies on one (:func:`grid_search`); the best model and the search."""
    return grid_search(
        grid,
        lambda st: fit_implicit_als(data, seed=seed, **st),
        lambda m: valid_ndcg(m, data),
    )
