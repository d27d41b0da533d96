"""``recunlearn bench exact``: the exact-unlearning family against the full model (K = 1).

For each data set (one seeded per-user split), each sub-model (``--models``: bpr, wmf,
itemknn, lightgcn, ncf; each with its own full model) and each method x K: NDCG@20 and Recall@20 on
the test split, training time, the fairness gap A-IGF (NDCG@20 of the 5% most active users
minus the rest) beside the full model's, and unlearning time for one random user and for 1%
of the users drawn three ways (random, most active "core", least active "edge"): the
wall-clock of ``Method.unlearn`` (touched shards retrained from scratch with their seeds, the
aggregator refit; for LASER the stages from the earliest touched group on), next to the full
model's fit. The engines' end-to-end cost of a request
(Spark delete + VACUUM, Ray, publish) comes on top: ``recunlearn run`` measures that.

Methods (``pipelines.bench.methods``): ``sisa`` (random split, mean), ``receraser``
(RecEraser's capacity-capped balanced k-means of user factors, attention), ``ultrare``
(balanced OT k-means, learned weights), ``laser`` (one model trained group after group over
RecEraser's groups) and any ``<partition>-<aggregator>`` pair. The fitted aggregators need
user vectors (BPR-MF, LightGCN); over WMF, item-kNN and NCF shards every sharded method
combines by the mean, and the cell records the aggregator it used. Results
are written after every cell and merged with an earlier run's; a Markdown table and a PNG of
NDCG@20 against K per method sit beside the JSON.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipelines.bench.common import OLD_SPLIT, dataset_dir, load_split
from pipelines.bench.methods import make_method
from pipelines.bench.suite import forget_set, utility
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.data.split import SPLIT_RULE
from recunlearn.evidence.fairness import a_igf, active_mask
from recunlearn.seeding import make_seed

log = logging.getLogger(__name__)

METHODS = ("sisa", "receraser", "ultrare", "laser")
MODELS = ("bpr",)
KS = (5, 10, 20)
KINDS = ("random", "core", "edge")
TOP = 20


def _quality(model: Any, data: InteractionData, active: np.ndarray) -> dict[str, Any]:
    util, per = utility(model, data, TOP)
    has = ~np.isnan(per)
    return {**util, "a_igf": a_igf(per[has], active[has])}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(
    run_cfg: RunConfig,
    *,
    datasets: list[str],
    methods: list[str],
    ks: list[int],
    out_dir: Path,
    data_dir: str | None = None,
    seed: int = 2026,
    share: float = 0.01,
    models: tuple[str, ...] = MODELS,
    kinds: tuple[str, ...] = KINDS,
    done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    previous = _load(out_dir)
    out: dict[str, Any] = {"seed": seed, "share": share, "datasets": previous.get("datasets", {})}
    for name in datasets:
        data, _ = load_split(name, dataset_dir(name, data_dir), seed=seed)
        active = active_mask(data.train, 0.05)
        res = out["datasets"].setdefault(name, {})
        res.update(
            {"users": int(data.n_users), "items": int(data.n_items), "train": int(data.train.nnz)}
        )
        sets = {
            "one": forget_set(
                data, "random", 1, np.random.default_rng(make_seed(seed, "exact-one"))
            )
        }
        for kind in kinds:
            sets[kind] = forget_set(
                data, kind, share, np.random.default_rng(make_seed(seed, "exact", kind))
            )
        for model in models:
            cfg = run_cfg.model_copy(update={"model": run_cfg.model.with_kind(model)})
            _model(
                cfg,
                res.setdefault("models", {}).setdefault(model, {"cells": {}}),
                name,
                model,
                data,
                active,
                sets,
                methods,
                ks,
                seed,
                lambda: done(out) if done else None,
            )
    return out


def _model(
    cfg: RunConfig,
    res: dict[str, Any],
    name: str,
    model: str,
    data: InteractionData,
    active: np.ndarray,
    sets: dict[str, Any],
    methods: list[str],
    ks: list[int],
    seed: int,
    done: Callable[[], None],
) -> None:
    """The full model and every method x K cell of one sub-model, into ``res``. Cells of an
    earlier run under another split rule are dropped: one model's table has one split."""
    if res.get("split") != SPLIT_RULE:
        res["cells"], res["split"] = {}, SPLIT_RULE
    full, wall = _timed(lambda: make_method("full", cfg, 1).fit(data, seed))
    res["full"] = {"fit_seconds": round(wall, 3), **_quality(full.model, data, active)}
    log.info(
        "bench exact %s %s: full model NDCG@20 %.4f, fit %.1fs",
        name,
        model,
        res["full"][f"ndcg@{TOP}"],
        wall,
    )
    for method in methods:
        for k in ks:
            m = make_method(method, cfg, k)
            fitted, fit_wall = _timed(partial(m.fit, data, seed))
            cell: dict[str, Any] = {
                "method": method,
                "n_shards": k,
                "fit_seconds": round(fit_wall, 3),
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "partition_seconds": round(fitted.seconds.get("partition", 0.0), 3),
                **_quality(fitted.model, data, active),
            }
            cell["ndcg_vs_full"] = round(cell[f"ndcg@{TOP}"] / res["full"][f"ndcg@{TOP}"], 4)
            agg = getattr(fitted.model, "aggregator", None)
            # learned weights fall back to the mean when the mean validates better: say which
            cell["aggregator"] = {
                "kind": getattr(agg, "kind", None),
                "kept": (getattr(agg, "meta", {}) or {}).get("stats", {}).get("kept"),
            }
            cell["unlearn"] = {}
            for tag, fs in sets.items():
                un, wall = _timed(partial(m.unlearn, fitted, fs.retained, fs.keys, seed))
                cell["unlearn"][tag] = {
                    "users": int(len(fs.keys)),
                    "seconds": round(wall, 3),
                    "shards_touched": len(un.shards_touched or []),
                    "speedup_vs_full_fit": round(res["full"]["fit_seconds"] / wall, 2),
                }
            res["cells"][f"{method}-K{k}"] = cell
            log.info(
                "bench exact %s %s %s K=%d: NDCG@20 %.4f (%.3f x full), one user %.1fs",
                name,
                model,
                method,
                k,
                cell[f"ndcg@{TOP}"],
                cell["ndcg_vs_full"],
                cell["unlearn"]["one"]["seconds"],
            )
            done()


def _load(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "exact.json"
    if not path.exists():
        return {}
    out = json.loads(path.read_text())
    for res in out.get("datasets", {}).values():
        if "cells" in res:  # results from before the models dimension: all BPR-MF
            res.setdefault("models", {})["bpr"] = {
                "full": res.pop("full", {}),
                "cells": res.pop("cells"),
            }
    return out


def k_loss(cells: dict[str, Any], method: str, ks: list[int]) -> float | None:
    """Relative NDCG@20 loss of ``method`` from its smallest to its largest K."""
    have = [k for k in ks if f"{method}-K{k}" in cells]
    if len(have) < 2:
        return None
    lo, hi = (
        cells[f"{method}-K{min(have)}"][f"ndcg@{TOP}"],
        cells[f"{method}-K{max(have)}"][f"ndcg@{TOP}"],
    )
    return round(1 - hi / lo, 4)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Exact unlearning: sharded and sequential methods against the full model (K = 1)",
        "",
        f"NDCG@{TOP} and Recall@{TOP} on the test split (full ranking, training items excluded); "
        "A-IGF = NDCG of the 5% most active users minus the rest. Unlearning: wall-clock of the "
        "touched shards' retraining and the aggregator's refit (LASER: the stages from the "
        "earliest "
        "touched group on), against the full model's fit "
        f"(compute only; {result.get('share', 0.01):.0%} of users for random / core / edge; "
        "in brackets the shards or groups retrained).",
        "",
    ]
    for name, res in result.get("datasets", {}).items():
        for model, mres in res.get("models", {}).items():
            full = mres.get("full", {})
            lines += [
                f"## {name}, {model} ({res.get('users')} users, {res.get('items')} items)",
                "",
                f"Split: {mres.get('split', OLD_SPLIT)}.",
                "",
                f"Full model: NDCG@{TOP} {full.get(f'ndcg@{TOP}')}, Recall@{TOP} "
                f"{full.get(f'recall@{TOP}')}, "
                f"A-IGF {full.get('a_igf', {}).get('gap')}, fit {full.get('fit_seconds')} s.",
                "",
                "| method | K | aggregator | NDCG@20 | x full | Recall@20 | A-IGF | fit s | "
                "one user s (speed-up) | 1% random / core / edge s (shards) |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            cells = mres.get("cells", {})
            for c in sorted(cells.values(), key=lambda c: (c["method"], c["n_shards"])):
                u = c["unlearn"]
                pct = " / ".join(
                    f"{u[t]['seconds']} ({u[t]['shards_touched']})" for t in KINDS if t in u
                )
                agg = c.get("aggregator", {})
                agg_s = agg.get("kind") or "-"
                if agg.get("kept"):
                    agg_s += f" (kept {agg['kept']})"
                lines.append(
                    f"| {c['method']} | {c['n_shards']} | {agg_s} | {c[f'ndcg@{TOP}']} | "
                    f"{c['ndcg_vs_full']} | "
                    f"{c[f'recall@{TOP}']} | {c['a_igf'].get('gap')} | {c['fit_seconds']} | "
                    f"{u['one']['seconds']} ({u['one']['speedup_vs_full_fit']}x) | {pct} |"
                )
            if cells:
                methods = sorted({c["method"] for c in cells.values()})
                ks = sorted({c["n_shards"] for c in cells.values()})
                losses = [f"{m} {k_loss(cells, m, ks)}" for m in methods]
                lines += ["", f"NDCG@20 loss from K={min(ks)} to K={max(ks)}: " + ", ".join(losses)]
            lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, res in result.get("datasets", {}).items():
        models = [m for m, r in res.get("models", {}).items() if r.get("cells")]
        if not models:
            continue
        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            mres = res["models"][model]
            for method in sorted({c["method"] for c in mres["cells"].values()}):
                cs = sorted(
                    (c for c in mres["cells"].values() if c["method"] == method),
                    key=lambda c: c["n_shards"],
                )
                ax.plot(
                    [c["n_shards"] for c in cs],
                    [c[f"ndcg@{TOP}"] for c in cs],
                    marker="o",
                    label=method,
                )
            if mres.get("full"):
                ax.axhline(mres["full"][f"ndcg@{TOP}"], color="k", ls="--", label="full (K=1)")
            ax.set_xlabel("K (shards / groups)")
            ax.set_ylabel(f"NDCG@{TOP}")
            ax.set_title(f"{name}, {model}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"exact-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths
