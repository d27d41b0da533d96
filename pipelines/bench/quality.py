"""``recunlearn bench quality``: does an unlearnable recunlearn model recommend as well as what
a platform team runs today?

For each data set (one seeded per-user split, the shared split rule) it measures, with one
evaluator (NDCG@20 and Recall@20 on the test rows, full ranking, training and validation items
excluded):
- baselines a user would pick, tuned on the validation rows only: popularity, EASE (lambda
  searched; recunlearn's own EASE, the same closed form) and implicit's ALS (factors,
  regularization and alpha searched; the ``bench`` extra). EASE is skipped with its memory
  figure where the two dense item x item matrices exceed ``model.ease_max_items``;
- each of recunlearn's sub-models with the configured defaults: the full model (K = 1), and
  the production sharding (``sharding.method`` with ``aggregator.kind``) at each K, through
  the train job's component and aggregator trainers (``pipelines.bench.methods``).

Cells are written after each one and kept on a re-run when the split and the settings that
produced them are unchanged. The Markdown names the strongest baseline and reports each model
and ensemble against it; the PNG plots NDCG@20 against K per model with the baselines as lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from pipelines.bench.baselines import grid_search, tune_implicit_als, valid_ndcg
from pipelines.bench.common import dataset_dir, load_split
from pipelines.bench.methods import make_method, production_method
from pipelines.bench.suite import utility
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.data.split import SPLIT_RULE
from recunlearn.errors import ConfigError
from recunlearn.models.ease import fit_ease

log = logging.getLogger(__name__)

SCHEMA = 1  # bump when a cell's protocol changes: finished cells are then measured again
BASELINES_SCHEMA = 2  # the same for the baselines (2: grids widened past their edges)


@dataclass
class QualityConfig:
    seed: int = 2026
    k: int = 20
    datasets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    n_shards: list[int] = field(default_factory=list)
    ease_lambda: list[float] = field(default_factory=list)
    implicit_als: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> QualityConfig:
        raw = yaml.safe_load(path.read_text()) or {}
        base = raw.pop("baselines", {}) or {}
        unknown = set(raw) - {"seed", "k", "datasets", "models", "n_shards"}
        unknown |= set(base) - {"ease_lambda", "implicit_als"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**raw, **base)


def settings_of(cfg: RunConfig, kind: str) -> Any:
    """The configured settings of ``kind``: the config's own when it is that kind (its
    ``--set model.<field>`` overrides kept), else the kind's defaults with the shared fields."""
    return cfg.model if cfg.model.kind == kind else cfg.model.with_kind(kind)


def settings_fingerprint(cfg: RunConfig) -> str:
    """What a model cell depends on besides the data: its kind's settings, the sharding and the
    aggregator."""
    blob = json.dumps(
        {
            "schema": SCHEMA,
            "model": cfg.model.model_dump(mode="json"),
            "sharding": cfg.sharding.model_dump(mode="json"),
            "aggregator": cfg.aggregator.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _test(model: Any, data: InteractionData, k: int) -> dict[str, Any]:
    util, _ = utility(model, data, k)
    return util


def _ease(data: InteractionData, grid: list[float], max_items: int, k: int) -> dict[str, Any]:
    """EASE with lambda chosen on validation (the grid widened past an edge), or why it was
    not run."""
    if data.n_items > max_items:
        return {
            "skipped": f"{data.n_items} items: two dense float64 item x item matrices need "
            f"{16 * data.n_items**2 / 2**30:.0f} GiB (model.ease_max_items = {max_items})"
        }

    def fit(setting: dict[str, Any]) -> tuple[Any, float]:
        model, st = fit_ease(data.user_keys, data.train, lam=setting["lambda"], max_items=max_items)
        return model, st["fit_seconds"]

    model, search = grid_search({"lambda": grid}, fit, lambda m: valid_ndcg(m, data, k))
    return {**_test(model, data, k), **search}


def _baselines(data: InteractionData, qc: QualityConfig, cfg: RunConfig) -> dict[str, Any]:
    from recunlearn.models import fit_model

    t0 = time.perf_counter()
    pop, _ = fit_model(data, cfg.model.with_kind("popularity"), seed=qc.seed)
    out: dict[str, Any] = {"popularity": {**_test(pop, data, qc.k)}}
    out["popularity"]["fit_seconds"] = round(time.perf_counter() - t0, 3)
    ease_cfg = settings_of(cfg, "ease")
    out["ease"] = _ease(data, qc.ease_lambda, ease_cfg.ease_max_items, qc.k)
    try:
        als, search = tune_implicit_als(data, qc.implicit_als, seed=qc.seed)
    except ImportError:
        out["implicit-als"] = {"skipped": "implicit is not installed (pip install '.[bench]')"}
    else:
        out["implicit-als"] = {**_test(als, data, qc.k), **search}
    return out


def _model_cells(
    cfg: RunConfig,
    res: dict[str, Any],
    data: InteractionData,
    qc: QualityConfig,
    fresh: bool,
    done: Callable[[], None],
) -> None:
    """The full model and the production sharding at each K of one sub-model, into ``res``;
    cells measured under other settings are dropped."""
    fp = settings_fingerprint(cfg)
    if fresh or res.get("fingerprint") != fp:
        res.clear()
        res.update({"fingerprint": fp, "settings": cfg.model.model_dump(mode="json"), "cells": {}})
    method = production_method(cfg)
    for k in [1, *qc.n_shards]:
        tag = "full" if k == 1 else f"K{k}"
        if tag in res["cells"]:
            continue
        m = make_method("full" if k == 1 else method, cfg, k)
        t0 = time.perf_counter()
        try:
            fitted = m.fit(data, qc.seed)
        except ConfigError as e:  # a model that refuses this data set (EASE's item cap)
            res["skipped"] = str(e)
            log.info("bench quality %s skipped: %s", cfg.model.kind, e)
            done()
            return
        wall = time.perf_counter() - t0
        agg = getattr(fitted.model, "aggregator", None)
        res["cells"][tag] = {
            "n_shards": k,
            "method": "full" if k == 1 else m.name,
            "aggregator": getattr(agg, "kind", None),
            "fit_seconds": round(wall, 3),
            "valid_ndcg": valid_ndcg(fitted.model, data, qc.k),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **_test(fitted.model, data, qc.k),
        }
        log.info(
            "bench quality %s K=%d: NDCG@%d %.4f, fit %.1fs",
            cfg.model.kind,
            k,
            qc.k,
            res["cells"][tag][f"ndcg@{qc.k}"],
            wall,
        )
        done()


def run(
    run_cfg: RunConfig,
    qc: QualityConfig,
    *,
    out_dir: Path,
    data_dir: str | None = None,
    fresh: bool = False,
    done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    previous = load(out_dir)
    out: dict[str, Any] = {
        "seed": qc.seed,
        "k": qc.k,
        "datasets": previous.get("datasets", {}),
    }
    for name in qc.datasets:
        data, _ = load_split(name, dataset_dir(name, data_dir), seed=qc.seed)
        res = out["datasets"].setdefault(name, {})
        if res.get("split") != SPLIT_RULE or res.get("seed") != qc.seed:
            res.clear()
        res.update(
            {
                "split": SPLIT_RULE,
                "seed": qc.seed,
                "users": int(data.n_users),
                "items": int(data.n_items),
                "train": int(data.train.nnz),
            }
        )
        base_fp = hashlib.sha256(
            json.dumps([BASELINES_SCHEMA, qc.ease_lambda, qc.implicit_als], sort_keys=True).encode()
        ).hexdigest()[:16]
        if fresh or res.get("baselines_fingerprint") != base_fp:
            res["baselines"] = _baselines(data, qc, run_cfg)
            res["baselines_fingerprint"] = base_fp
            log.info("bench quality %s baselines: %s", name, summary(res)["baselines"])
            if done:
                done(out)
        for model in qc.models:
            cfg = run_cfg.model_copy(update={"model": settings_of(run_cfg, model)})
            _model_cells(
                cfg,
                res.setdefault("models", {}).setdefault(model, {}),
                data,
                qc,
                fresh,
                lambda: done(out) if done else None,
            )
        res["summary"] = summary(res)
        if done:
            done(out)
    return out


def load(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "quality.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _ndcg(cell: dict[str, Any] | None) -> float | None:
    return None if not cell or "skipped" in cell else cell.get("ndcg@20")


def _present(values: dict[str, float | None]) -> dict[str, float]:
    return {n: v for n, v in values.items() if v is not None}


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue's done-when reads: the strongest baseline, recunlearn's best full
    model and default ensemble (K = 10) against it, WMF against implicit ALS."""
    base = res.get("baselines", {})
    models = {m: r.get("cells", {}) for m, r in res.get("models", {}).items() if m != "popularity"}
    strong = _present({n: _ndcg(base.get(n)) for n in ("ease", "implicit-als")})
    out: dict[str, Any] = {
        "baselines": {n: _ndcg(v) for n, v in base.items()},
        "strongest_baseline": max(strong, key=strong.__getitem__) if strong else None,
    }
    ref = max(strong.values()) if strong else None
    fulls = _present({m: _ndcg(c.get("full")) for m, c in models.items()})
    if fulls:
        best = max(fulls, key=fulls.__getitem__)
        out["best_full_model"] = {"model": best, "ndcg@20": fulls[best]}
        if ref:
            out["best_full_model"]["vs_strongest_baseline"] = round(fulls[best] / ref, 4)
    ens = _present({m: _ndcg(c.get("K10")) for m, c in models.items()})
    if ens and ref:
        out["ensemble_K10_vs_strongest_baseline"] = {m: round(v / ref, 4) for m, v in ens.items()}
    wmf = _ndcg(models.get("wmf", {}).get("full"))
    if wmf is not None and strong.get("implicit-als"):
        out["wmf_vs_implicit_als"] = round(wmf / strong["implicit-als"], 4)
    return out


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def markdown(result: dict[str, Any]) -> str:
    k = result.get("k", 20)
    lines = [
        "# Recommendation quality: recunlearn's sub-models, full and sharded, against the "
        "baselines",
        "",
        f"NDCG@{k} and Recall@{k} on the test rows of recunlearn's per-user 80/10/10 split "
        "(seeded, the shared split rule), full ranking, training and validation items excluded, "
        "one evaluator for every row. Baselines are tuned on the validation rows only; "
        "recunlearn's models use the configured defaults (early stopping on validation). "
        "Sharded: the production partition and aggregator at each K. "
        "In brackets: the ratio to the strongest baseline (EASE or implicit ALS).",
        "",
    ]
    for name, res in result.get("datasets", {}).items():
        s = res.get("summary") or summary(res)
        base = res.get("baselines", {})
        strong = s.get("strongest_baseline")
        ref = _ndcg(base.get(strong)) if strong else None
        lines += [
            f"## {name} ({res.get('users')} users, {res.get('items')} items, "
            f"{res.get('train')} training pairs)",
            "",
            f"Split: {res.get('split')}.",
            "",
            f"| baseline | NDCG@{k} | Recall@{k} | chosen on validation |",
            "|---|---|---|---|",
        ]
        for bname, b in base.items():
            if "skipped" in b:
                lines.append(f"| {bname} | - | - | skipped: {b['skipped']} |")
                continue
            chosen = {c: v for c, v in (b.get("chosen") or {}).items() if c != "fit_seconds"}
            note = ", ".join(f"{c}={v}" for c, v in chosen.items()) or "-"
            if b.get("at_grid_edge"):
                note += f" (at the grid's edge: {', '.join(b['at_grid_edge'])})"
            lines.append(f"| {bname} | {_fmt(_ndcg(b))} | {_fmt(b.get(f'recall@{k}'))} | {note} |")
        ks = sorted(
            {
                c["n_shards"]
                for r in res.get("models", {}).values()
                for c in r.get("cells", {}).values()
            }
        )
        head = " | ".join("full" if n == 1 else f"K={n}" for n in ks)
        lines += ["", f"| model | {head} | full fit s |", "|---|" + "---|" * (len(ks) + 1)]
        for model, r in res.get("models", {}).items():
            if r.get("skipped"):
                lines.append(f"| {model} | skipped: {r['skipped']} |" + " |" * len(ks))
                continue
            cells = {c["n_shards"]: c for c in r.get("cells", {}).values()}
            row = []
            for n in ks:
                v = _ndcg(cells.get(n))
                row.append("-" if v is None else f"{v:.4f}" + (f" ({v / ref:.3f})" if ref else ""))
            fit = cells.get(1, {}).get("fit_seconds")
            lines.append(f"| {model} | " + " | ".join(row) + f" | {_fmt(fit)} |")
        method = next(
            (
                c["method"]
                for r in res.get("models", {}).values()
                for c in r.get("cells", {}).values()
                if c["n_shards"] > 1
            ),
            None,
        )
        lines += ["", f"Sharded method: {method or '-'}."]
        if "best_full_model" in s:
            b = s["best_full_model"]
            lines.append(
                f"Best full model: {b['model']} {b['ndcg@20']:.4f}"
                + (f" = {b['vs_strongest_baseline']}x {strong}." if ref else ".")
            )
        if "wmf_vs_implicit_als" in s:
            lines.append(f"WMF / implicit ALS: {s['wmf_vs_implicit_als']}.")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in result.get("datasets", {}).items() if r.get("models")]
    if not names:
        return []
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        res = result["datasets"][name]
        for model, r in res["models"].items():
            cs = sorted(r.get("cells", {}).values(), key=lambda c: c["n_shards"])
            if cs:
                ax.plot(
                    [c["n_shards"] for c in cs], [c["ndcg@20"] for c in cs], marker="o", label=model
                )
        for (bname, b), style in zip(
            res.get("baselines", {}).items(), (":", "--", "-."), strict=False
        ):
            if _ndcg(b) is not None:
                ax.axhline(_ndcg(b), color="k", ls=style, lw=1, label=bname)
        ax.set_xscale("log")
        ax.set_xlabel("K (1 = full model)")
        ax.set_ylabel("NDCG@20")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "quality.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
