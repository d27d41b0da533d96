"""Sub-models behind one small interface (see ``base.Recommender``), chosen by
``model.kind`` in the config: fit one, or rebuild one from a checkpoint's state."""

from __future__ import annotations

from typing import Any

from recunlearn.models.base import Recommender


def load_model(state: dict[str, Any]) -> Recommender:
    """The model a checkpoint's state describes (its ``kind``: bpr, wmf, itemknn, lightgcn,
    ncf or ease)."""
    kind = state.get("kind", "bpr")
    if kind == "bpr":
        from recunlearn.models.bpr import BPRMF

        return BPRMF.from_state(state)
    if kind == "wmf":
        from recunlearn.models.wmf import WMF

        return WMF.from_state(state)
    if kind == "itemknn":
        from recunlearn.models.itemknn import ItemKNN

        return ItemKNN.from_state(state)
    if kind == "lightgcn":
        from recunlearn.models.lightgcn import LightGCN

        return LightGCN.from_state(state)
    if kind == "ncf":
        from recunlearn.models.ncf import NCF

        return NCF.from_state(state)
    if kind == "ease":
        from recunlearn.models.ease import EASE

        return EASE.from_state(state)
    raise ValueError(f"unknown model kind {kind!r} in checkpoint")


def fit_model(data: Any, cfg: Any, *, seed: int, init: Any = None,
              max_epochs: int | None = None) -> tuple[Recommender, dict[str, Any]]:
    """Train ``cfg.kind`` on ``data.train`` (an InteractionData; BPR, LightGCN and NCF
    early-stop on ``data.valid``). Stats always carry fit_seconds, epochs, best_epoch,
    valid_ndcg, n_users, n_train and curve. ``init`` (a model of the same kind) warm-starts
    the trained kinds and ``max_epochs`` caps the gradient-trained ones' epochs (sequential
    training); WMF converges from ``init`` to its tolerance, and an item-kNN index and EASE's
    closed form are functions of their data alone, so they ignore ``init``."""
    import time

    base = {"epochs": 0, "best_epoch": 0, "valid_ndcg": None, "curve": [],
            "n_users": int(data.n_users), "n_train": int(data.train.nnz)}
    if cfg.kind == "bpr":
        from recunlearn.models.bpr import fit_bpr

        return fit_bpr(data, cfg, seed=seed, init=init, max_epochs=max_epochs)
    if cfg.kind == "lightgcn":
        from recunlearn.models.lightgcn import fit_lightgcn

        return fit_lightgcn(data, cfg, seed=seed, init=init, max_epochs=max_epochs)
    if cfg.kind == "ncf":
        from recunlearn.models.ncf import fit_ncf

        return fit_ncf(data, cfg, seed=seed, init=init, max_epochs=max_epochs)
    t0 = time.perf_counter()
    if cfg.kind == "wmf":
        from recunlearn.models.wmf import fit_wmf

        model, stats = fit_wmf(data.user_keys, data.train, dim=cfg.dim, alpha=cfg.wmf_alpha,
                               reg=cfg.wmf_reg, tol=cfg.wmf_tol, seed=seed, init=init)
        return model, {**base, **stats, "epochs": stats["rounds"]}
    if cfg.kind == "itemknn":
        from recunlearn.models.itemknn import ItemKNN

        model = ItemKNN(data.user_keys, data.train, k=cfg.knn_k, shrink=cfg.knn_shrink)
        return model, {**base, "fit_seconds": time.perf_counter() - t0}
    if cfg.kind == "ease":
        from recunlearn.models.ease import fit_ease

        model, stats = fit_ease(data.user_keys, data.train, lam=cfg.ease_lambda, max_items=cfg.ease_max_items)
        return model, {**base, **stats}
    raise ValueError(f"unknown model kind {cfg.kind!r}")
