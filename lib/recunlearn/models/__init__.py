"""Sub-models behind one small interface (``base.Recommender``; ``base.Forgettable`` for the
ones that forget exactly in place), chosen by ``model.kind`` in the config.

:data:`MODELS` is the one table of kinds: the config's choices, ``fit_model`` and
``load_model`` read it, and an unknown kind is refused. Adding a sub-model is its module (a
``Recommender`` with ``state``/``from_state`` and a ``fit(data, cfg, *, seed, init,
max_epochs)``), one line here, and a two-line contract test (``recunlearn.testing``). This
module imports no model code until one is used (``recunlearn forget`` loads the config
without torch).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from recunlearn.models.base import Recommender


@dataclass(frozen=True)
class ModelKind:
    """One sub-model kind: where its class and fit function live, and what it offers."""

    name: str
    cls: str  # "module:Class", a Recommender
    # "module:function": fit(data, cfg, *, seed, init=None, max_epochs=None) -> (model, stats)
    fit: str
    summary: str
    factor: bool = (
        False  # serves user . item factors (+ item bias): the fitted aggregators work on it
    )
    forgets: bool = False  # forgets exactly in place (base.Forgettable)

    def model_class(self) -> type[Recommender]:
        return _attr(self.cls)

    def fit_function(self) -> Callable[..., tuple[Recommender, dict[str, Any]]]:
        return _attr(self.fit)


def _attr(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


MODELS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind(
            "bpr",
            "recunlearn.models.bpr:BPRMF",
            "recunlearn.models.bpr:fit_bpr",
            "BPR-MF (torch; every method incl. the fast tier's influence, fine-tune and ascent)",
            factor=True,
        ),
        ModelKind(
            "wmf",
            "recunlearn.models.wmf:WMF",
            "recunlearn.models.wmf:fit",
            "WMF (implicit ALS; unlearn --method als re-converges it)",
            forgets=True,
        ),
        ModelKind(
            "itemknn",
            "recunlearn.models.itemknn:ItemKNN",
            "recunlearn.models.itemknn:fit",
            "item-kNN (unlearn --method knn updates its top-k index)",
            forgets=True,
        ),
        ModelKind(
            "lightgcn",
            "recunlearn.models.lightgcn:LightGCN",
            "recunlearn.models.lightgcn:fit_lightgcn",
            "LightGCN (BPR loss, sparse propagation on the shard's graph)",
            factor=True,
        ),
        ModelKind(
            "ncf",
            "recunlearn.models.ncf:NCF",
            "recunlearn.models.ncf:fit_ncf",
            "NCF (NeuMF: GMF + MLP, log loss with sampled negatives)",
        ),
        ModelKind(
            "ease",
            "recunlearn.models.ease:EASE",
            "recunlearn.models.ease:fit",
            "EASE (closed form; unlearn --method ease updates its inverse Gram matrix exactly)",
            forgets=True,
        ),
        ModelKind(
            "popularity",
            "recunlearn.models.popularity:Popularity",
            "recunlearn.models.popularity:fit",
            "popularity (item counts; a baseline that forgets exactly by counting down)",
            forgets=True,
        ),
    )
}
FACTOR_MODELS = tuple(k for k, m in MODELS.items() if m.factor)


def model_kind(name: str) -> ModelKind:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}: one of {', '.join(MODELS)}") from None


def load_model(state: dict[str, Any]) -> Recommender:
    """The model a checkpoint's state describes (its ``kind``)."""
    if "kind" not in state:
        raise ValueError(
            "checkpoint state names no model kind; it predates typed checkpoints: train again"
        )
    return model_kind(state["kind"]).model_class().from_state(state)


def fit_model(
    data: Any, cfg: Any, *, seed: int, init: Any = None, max_epochs: int | None = None
) -> tuple[Recommender, dict[str, Any]]:
    """Train ``cfg.kind`` on ``data.train`` (an InteractionData; the gradient-trained kinds
    early-stop on ``data.valid``). Stats always carry fit_seconds, epochs, best_epoch,
    valid_ndcg, n_users, n_train, curve and size_class (the ``model.size_classes`` bound
    whose settings the fit used; None: the kind's main settings). ``init`` (a model of the
    same kind) warm-starts the trained kinds and ``max_epochs`` caps the gradient-trained
    ones' epochs (sequential training); WMF converges from ``init`` to its tolerance; the
    closed-form kinds are functions of their data alone and ignore both."""
    base: dict[str, Any] = {
        "epochs": 0,
        "best_epoch": 0,
        "valid_ndcg": None,
        "curve": [],
        "n_users": int(data.n_users),
        "n_train": int(data.train.nnz),
    }
    # a fit on few rows (a shard) takes its kind's size class, where one holds it
    size_class = cfg.size_class(int(data.train.nnz))
    base["size_class"] = None if size_class is None else size_class.max_train
    settings = cfg.for_rows(int(data.train.nnz))
    model, stats = model_kind(cfg.kind).fit_function()(
        data, settings, seed=seed, init=init, max_epochs=max_epochs
    )
    return model, {**base, **stats}
