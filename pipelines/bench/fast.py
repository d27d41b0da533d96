"""``recunlearn bench fast``: the fast tier on a stream of single-user forget requests.

Per data set (the seeded per-user split of the other benchmarks) one seeded stream of users is
forgotten one request at a time. Each family has one original model and, after 1, 10, 100 and
1,000 requests, a retrain from scratch without the users forgotten so far (same config, same
seed):
- BPR-MF: ``scif`` (selective influence), ``influence`` (every parameter), ``finetune``,
  ``ascent`` (``recunlearn.unlearning.fast_bpr``);
- WMF: ``als``, the exact re-convergence update (``recunlearn.models.wmf``);
- item-kNN: ``knn``, the incremental top-k index (``recunlearn.models.itemknn``), checked
  equal to the index rebuilt without the users at every checkpoint;
- EASE: ``ease``, the Woodbury update of its inverse Gram matrix (``recunlearn.models.ease``,
  lambda from ``model.ease_lambda``), its weights compared with the refit's at every checkpoint.
Measured per method: latency per request (p50, p90, max), speed-up of the p50 over the
family's full retrain, RelEff (NDCG@20 of the retained users under the unlearned model /
under the retrain) and the forgotten users' NDCG@20 (their held-out items, served by fold-in
of their former history) under the original, unlearned and retrained models. Slow methods run
shorter streams (``--stream``), reported with the number of requests behind each figure.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pipelines.bench.common import OLD_SPLIT, dataset_dir, load_split, write_outputs
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.data.split import SPLIT_RULE
from recunlearn.evidence.completeness import functional
from recunlearn.evidence.evaluation import evaluate_users
from recunlearn.models import fit_model
from recunlearn.seeding import make_seed, numpy_rng
from recunlearn.unlearning.fast_bpr import BPRUnlearner
from recunlearn.unlearning.methods import (
    Guarantee,
    apply_approximate,
    apply_exact,
    get_method,
)
from recunlearn.unlearning.targets import Targets

log = logging.getLogger(__name__)

CHECKPOINTS = (1, 10, 100, 1000)
# requests per method: the Newton step over every parameter and the active methods cost more
STREAM = {
    "scif": 1000,
    "als": 1000,
    "knn": 1000,
    "ease": 1000,
    "finetune": 200,
    "ascent": 200,
    "influence": 20,
}


def family_of(method: str) -> str:
    """The sub-model kind a fast method updates (``METHODS``: the registry the job reads)."""
    kinds = get_method(method).models
    if kinds is None or len(kinds) != 1:
        raise ValueError(f"bench fast: {method} is not a fast method of one sub-model kind")
    return next(iter(kinds))


def _fit(family: str, data: InteractionData, cfg: RunConfig, seed: int) -> tuple[Any, float]:
    """The full model of ``family`` with the job's trainer and ``model.*`` settings."""
    t0 = time.perf_counter()
    # the configured kind's own settings; another family's are its defaults
    settings = cfg.model if cfg.model.kind == family else cfg.model.with_kind(family)
    model, _ = fit_model(data, settings, seed=seed)
    return model, time.perf_counter() - t0


def _forgetter(
    method: str, model: Any, data: InteractionData, cfg: RunConfig, seed: int
) -> Callable[[np.ndarray], dict]:
    """One request's update of ``model`` through the code the unlearn job runs
    (``recunlearn.unlearning.methods``): the exact in-place update, or the fast tier's
    approximate one. The approximate methods keep one ``BPRUnlearner`` over the stream (the
    job builds one per run from the touched shard's rows)."""

    def targets(keys: np.ndarray) -> Targets:
        return Targets(users=[str(k) for k in keys], items=[], pairs=[], touched=[0], shards_of={})

    if get_method(method).guarantee is Guarantee.APPROXIMATE:
        un = BPRUnlearner(
            model, data.train, cfg.unlearn.fast, reg=cfg.model.reg, holdout=data.valid, seed=seed
        )
        return lambda keys: apply_approximate(un, targets(keys), method)[-1]
    return lambda keys: apply_exact(model, targets(keys))[-1]


def _checkpoint(
    model: Any, retrained: Any, original: Any, data: InteractionData, gone: np.ndarray
) -> dict[str, Any]:
    retained = data.without_users(gone)
    u = evaluate_users(model, retained)["ndcg@20"]
    r = evaluate_users(retrained, retained)["ndcg@20"]
    forgotten = data.subset(np.isin(data.user_keys, gone))
    has = np.diff(forgotten.test.indptr) > 0
    f = {
        name: float(
            functional(m, forgotten.user_keys[has], forgotten.train[has], forgotten.test[has])[
                "ndcg"
            ].mean()
        )
        for name, m in (("original", original), ("unlearned", model), ("retrained", retrained))
    }
    o = evaluate_users(original, retained)["ndcg@20"]
    # the control: the original model with the users' rows merely dropped; it shows how far two
    # trainings on nearly the same data differ (the seed's trajectory), the floor of RelEff's noise
    return {
        "ndcg@20": round(u, 5),
        "ndcg@20_retrained": round(r, 5),
        "rel_eff": round(u / r, 4),
        "rel_eff_original": round(o / r, 4),
        "forget_ndcg@20": {k: round(v, 5) for k, v in f.items()},
    }


def run_dataset(
    name: str,
    cfg: RunConfig,
    *,
    data_dir: str | None,
    methods: list[str],
    stream: dict[str, int],
    done: Callable[[dict[str, Any]], Any] = lambda r: None,
) -> dict[str, Any]:
    """One data set; ``done`` gets the result so far after every method (written to disk)."""
    torch.set_num_threads(1)
    data, _ = load_split(name, dataset_dir(name, data_dir), seed=cfg.seed)
    n_max = max(stream[m] for m in methods)
    order = numpy_rng(cfg.seed, "bench-fast", name).permutation(data.n_users)
    users = data.user_keys[order[: min(n_max, data.n_users - 1)]]
    marks = [c for c in CHECKPOINTS if c <= len(users)]
    seed = make_seed(cfg.seed, "bench-fast-model") % 2**31
    out: dict[str, Any] = {
        "dataset": name,
        "users": int(data.n_users),
        "split": SPLIT_RULE,
        "items": int(data.n_items),
        "train_interactions": int(data.train.nnz),
        "methods": {},
        "families": {},
    }
    for family in dict.fromkeys(family_of(m) for m in methods):
        fam_methods = [m for m in methods if family_of(m) == family]
        need = max(stream[m] for m in fam_methods)
        original, fit_s = _fit(family, data, cfg, seed)
        retrains: dict[int, Any] = {}
        retrain_s: dict[int, float] = {}
        for c in marks:
            if c <= need:
                retrains[c], retrain_s[c] = _fit(family, data.without_users(users[:c]), cfg, seed)
        out["families"][family] = {
            "fit_seconds": round(fit_s, 3),
            "retrain_seconds": {str(c): round(s, 3) for c, s in retrain_s.items()},
            "original_ndcg@20": round(evaluate_users(original, data)["ndcg@20"], 5),
        }
        log.info("bench fast %s/%s: fit %.1fs", name, family, fit_s)
        for method in fam_methods:
            model = copy.deepcopy(original)
            forget = _forgetter(method, model, data, cfg, seed)
            lat, rows, extra = [], {}, {}
            for n, key in enumerate(users[: stream[method]], start=1):
                t0 = time.perf_counter()
                info = forget(np.array([key]))
                lat.append(time.perf_counter() - t0)
                if n in retrains:
                    rows[str(n)] = _checkpoint(model, retrains[n], original, data, users[:n])
                    if family == "itemknn":
                        rb = retrains[n]
                        rows[str(n)]["index_equal_to_rebuild"] = bool(
                            np.array_equal(model.neighbours, rb.neighbours)
                            and np.array_equal(model.sims, rb.sims)
                        )
                    if family == "wmf":
                        rows[str(n)]["max_relative_residual"] = model.max_residual()
                    if family == "ease":
                        w, wr = model.weights().double(), retrains[n].weights().double()
                        rows[str(n)]["weights_max_rel_diff_vs_refit"] = float(
                            (w - wr).abs().max() / wr.abs().max()
                        )
                    log.info("bench fast %s/%s after %d: %s", name, method, n, rows[str(n)])
            for k in ("cg_iterations", "rounds", "steps", "block_users", "block_items", "terms"):
                if k in info:
                    extra[f"last_{k}"] = info[k]
            p50 = float(np.median(lat))
            out["methods"][method] = {
                "family": family,
                "requests": len(lat),
                "latency_seconds": {
                    "p50": round(p50, 4),
                    "p90": round(float(np.quantile(lat, 0.9)), 4),
                    "max": round(float(np.max(lat)), 4),
                    "mean": round(float(np.mean(lat)), 4),
                },
                "speedup_vs_full_retrain": round(fit_s / p50, 1),
                "after": rows,
                **extra,
            }
            done(out)
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Fast tier: single-user requests, one at a time",
        "",
        "RelEff = NDCG@20 of the retained users, unlearned / retrained from scratch without "
        "the forgotten users (same config and seed). Forget NDCG@20: the forgotten users' "
        "held-out items, served by fold-in of their former history (original -> unlearned; "
        "retrained).",
        "",
    ]
    for res in results:
        lines += [
            f"## {res['dataset']} ({res['users']} users, {res['items']} items, "
            f"{res['train_interactions']} training interactions; split: "
            f"{res.get('split', OLD_SPLIT)})",
            "",
            "| method | family | full fit s | requests | p50 s | p90 s | speed-up | "
            "RelEff after 1 / 10 / 100 / 1000 (untouched original's) | forget NDCG after the last "
            "checkpoint |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in res["methods"].items():
            fam = res["families"][m["family"]]
            rel = " / ".join(
                f"{m['after'][c]['rel_eff']} ({m['after'][c]['rel_eff_original']})"
                if c in m["after"]
                else "-"
                for c in ("1", "10", "100", "1000")
            )
            last = list(m["after"].values())[-1]["forget_ndcg@20"] if m["after"] else {}
            fg = (
                f"{last['original']:.3f} -> {last['unlearned']:.3f}; {last['retrained']:.3f}"
                if last
                else "-"
            )
            lines.append(
                f"| {name} | {m['family']} | {fam['fit_seconds']:.1f} | {m['requests']} | "
                f"{m['latency_seconds']['p50']:.3f} | {m['latency_seconds']['p90']:.3f} | "
                f"{m['speedup_vs_full_retrain']:.0f}x | {rel} | {fg} |"
            )
        lines.append("")
    return "\n".join(lines)


def run(
    cfg: RunConfig,
    *,
    datasets: list[str],
    out_dir: Path,
    data_dir: str | None = None,
    methods: list[str] | None = None,
    stream: dict[str, int] | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    methods = methods or list(STREAM)
    unknown = sorted(set(methods) - set(STREAM))
    if unknown:
        raise ValueError(f"unknown fast methods {unknown}; choose from {sorted(STREAM)}")
    stream = {**STREAM, **(stream or {})}
    # results of data sets this run does not touch are kept from the last run's JSON
    # and so are the methods this run does not run, on the data sets it does
    old = out_dir / "fast.json"
    previous = (
        {r["dataset"]: r for r in json.loads(old.read_text()).get("results", [])}
        if old.exists()
        else {}
    )
    kept = [r for d, r in previous.items() if d not in datasets]
    results: list[dict[str, Any]] = []

    def save(partial: dict[str, Any]) -> dict[str, Any]:
        before = previous.get(partial["dataset"], {})
        merged = {
            **partial,
            "methods": {
                **{
                    m: v
                    for m, v in before.get("methods", {}).items()
                    if m not in partial["methods"]
                },
                **partial["methods"],
            },
            "families": {**before.get("families", {}), **partial["families"]},
        }
        rows = [r for r in results if r["dataset"] != partial["dataset"]] + [merged]
        write_outputs(out_dir, "fast", {"results": kept + rows}, markdown(kept + rows))
        return merged

    for name in datasets:
        res = run_dataset(name, cfg, data_dir=data_dir, methods=methods, stream=stream, done=save)
        results.append(save(res))
    outputs = write_outputs(
        out_dir,
        "fast",
        {"results": kept + results, "wall_seconds": round(time.perf_counter() - t0, 1)},
        markdown(kept + results),
    )
    return {"outputs": outputs, "wall_seconds": round(time.perf_counter() - t0, 1)}
