"""``recunlearn bench attribute``: attacker accuracy against NDCG@20 for every attribute
unlearning method, on the full model and on a sharded ensemble.

Protocol (one seeded split, one seeded model per setting):
- the attacker (MLP and gradient boosting) is trained on 70% of the users' *published*
  embeddings with their labels and tested on the other 30%, so it is retrained after each
  edit (the strong attacker: it sees the edited model);
- utility is NDCG@20 / Recall@20 on the test split with full ranking (train and valid items
  excluded), relative to the unedited model;
- per-user scope: a random share of users asks; the attacker is trained on everyone else
  (with labels) and tested on the users who asked, before and after; the other users'
  vectors must be unchanged bit for bit.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.bench.common import BENCH_SECRET, dataset_dir, load_split, write_outputs
from recunlearn.attribute.adversarial import fit_bpr_adversarial
from recunlearn.attribute.attack import KINDS, attack, fit_attacker, score_attacker
from recunlearn.attribute.edit import edit_ensemble, edit_model
from recunlearn.attribute.labels import attribute, labels_for_keys, read_user_attributes
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.data.pseudonym import user_key
from recunlearn.metrics import evaluate
from recunlearn.models.bpr import fit_bpr
from recunlearn.seeding import make_seed
from recunlearn.sharding.ensemble import MeanAggregator, ShardedEnsemble, shard_views

log = logging.getLogger(__name__)

# Overrides of the configured edit (the first row is the configuration as it is): the
# trade-off curve of the post-training edit and what each loss term contributes.
EDIT_GRID: list[dict[str, Any]] = [
    {},
    {"w_reg": 0.3},
    {"w_reg": 1.0},
    {"w_adv": 0.0, "w_reg": 0.3},
    {"w_adv": 0.0, "w_u2u": 1.0, "w_reg": 0.3},
    {"space": "parameter", "w_reg": 0.3},
]
# (mode, weight) of the in-training adversary
ADVERSARIES = [("confusion", 1.0), ("reverse", 1.0)]


def _utility(score_rows, data: InteractionData) -> dict[str, float]:  # noqa: ANN001
    seen = (data.train + data.valid).tocsr()
    m = evaluate(score_rows, np.arange(data.n_users), seen, data.test, k=20)
    return {"ndcg@20": m["ndcg@20"], "recall@20": m["recall@20"]}


def _model_utility(model, data: InteractionData) -> dict[str, float]:  # noqa: ANN001
    return _utility(lambda r: model.score(r), data)


def _attacks(
    x: np.ndarray, y: np.ndarray, n_classes: int, seed: int, bootstrap: int
) -> dict[str, Any]:
    keep = y >= 0
    return {
        k: attack(x[keep], y[keep], kind=k, n_classes=n_classes, seed=seed, bootstrap=bootstrap)
        for k in KINDS
    }


def _row(
    setting: str,
    method: str,
    attr: str,
    util: dict[str, float],
    base: dict[str, float],
    attacks: dict[str, Any],
    seconds: float | None,
    **extra: Any,
) -> dict[str, Any]:
    ba = {k: a["balanced_accuracy"] for k, a in attacks.items()}
    return {
        "setting": setting,
        "method": method,
        "attribute": attr,
        **util,
        "ndcg_ratio": util["ndcg@20"] / base["ndcg@20"],
        "attacks": attacks,
        "balanced_accuracy": ba,
        "worst_balanced_accuracy": max(ba.values()),
        "seconds": seconds,
        **extra,
    }


def run(
    cfg: RunConfig,
    *,
    dataset: str,
    out_dir: Path,
    data_dir: str | None = None,
    attributes: tuple[str, ...] = ("gender", "age"),
    n_shards: int = 5,
    scope_share: float = 0.1,
    bootstrap: int = 200,
    grid: list | None = None,
    adversaries: list | None = None,
) -> dict[str, Any]:
    t_all = time.perf_counter()
    torch.manual_seed(0)
    folder = dataset_dir(dataset, data_dir)
    seed = make_seed(cfg.seed, "bench-attribute", dataset)
    data, _ = load_split(dataset, folder, seed=seed, valid=cfg.split.valid, test=cfg.split.test)
    people = read_user_attributes(folder)
    labels = {
        a: labels_for_keys(people, a, data.user_keys, lambda r: user_key(BENCH_SECRET, r))
        for a in attributes
    }
    grid = grid or EDIT_GRID
    rows: list[dict[str, Any]] = []
    ecfg = cfg.attribute.edit

    # ---- the full model
    model, stats = fit_bpr(data, cfg.model, seed=seed)
    base = _model_utility(model, data)
    log.info("full model: %s in %.1fs", base, stats["fit_seconds"])
    for a in attributes:
        n_cls = len(attribute(a).classes)
        y = labels[a]
        rows.append(
            _row(
                "full",
                "original",
                a,
                base,
                base,
                _attacks(model.user.numpy(), y, n_cls, seed, bootstrap),
                None,
            )
        )
        targets = np.flatnonzero(y >= 0)
        for update in grid:
            c = ecfg.model_copy(update=update)
            edited, _, st = edit_model(model, y, targets, cfg=c, seed=seed)
            util = _model_utility(edited, data)
            label = f"post-{c.space} dist={c.w_dist} adv={c.w_adv} u2u={c.w_u2u} reg={c.w_reg}"
            rows.append(
                _row(
                    "full",
                    label + (" (default)" if not update else ""),
                    a,
                    util,
                    base,
                    _attacks(edited.user.numpy(), y, n_cls, seed, bootstrap),
                    st["seconds"],
                    edited_users=int(len(targets)),
                )
            )
            log.info("%s %s: %s", a, rows[-1]["method"], rows[-1]["worst_balanced_accuracy"])
        for mode, w in ADVERSARIES if adversaries is None else adversaries:
            t0 = time.perf_counter()
            adv, _ = fit_bpr_adversarial(
                data, cfg.model, y, n_classes=n_cls, weight=w, seed=seed, mode=mode
            )
            util = _model_utility(adv, data)
            rows.append(
                _row(
                    "full",
                    f"in-training {mode} w={w}",
                    a,
                    util,
                    base,
                    _attacks(adv.user.numpy(), y, n_cls, seed, bootstrap),
                    round(time.perf_counter() - t0, 3),
                )
            )

    # ---- per-user scope on the full model (the default edit)
    scope = []
    rng = np.random.default_rng(seed)
    for a in attributes:
        n_cls = len(attribute(a).classes)
        y = labels[a]
        known = np.flatnonzero(y >= 0)
        asked = np.sort(rng.choice(known, max(int(len(known) * scope_share), 20), replace=False))
        rest = np.setdiff1d(known, asked)
        edited, undo, st = edit_model(model, y, asked, cfg=ecfg, seed=seed)
        entry = {
            "attribute": a,
            "requesting_users": int(len(asked)),
            "seconds": st["seconds"],
            "others_unchanged": bool(
                torch.equal(edited.user[torch.from_numpy(rest)], model.user[torch.from_numpy(rest)])
            ),
            "undo_exact": bool(torch.equal(undo["original"], model.user[undo["rows"]])),
        }
        for k in KINDS:
            clf = fit_attacker(model.user.numpy()[rest], y[rest], kind=k, seed=seed)
            entry[f"{k}_before"] = score_attacker(
                clf,
                model.user.numpy()[asked],
                y[asked],
                n_classes=n_cls,
                bootstrap=bootstrap,
                seed=seed,
            )
            entry[f"{k}_after"] = score_attacker(
                clf,
                edited.user.numpy()[asked],
                y[asked],
                n_classes=n_cls,
                bootstrap=bootstrap,
                seed=seed,
            )
        entry["ndcg_ratio"] = _model_utility(edited, data)["ndcg@20"] / base["ndcg@20"]
        scope.append(entry)

    # ---- a sharded ensemble (random user shards, mean aggregator)
    ens_rows, ens_info = [], {}
    if n_shards > 1:
        shard_of = np.random.default_rng(seed + 1).integers(0, n_shards, data.n_users)
        shards, fit_s = [], []
        for shard in range(n_shards):
            r = np.flatnonzero(shard_of == shard)
            m, s = fit_bpr(data.subset(r), cfg.model, seed=make_seed(seed, "shard", shard))
            m.fold_in_reg = cfg.aggregator.fold_in_reg
            shards.append(m)
            fit_s.append(s["fit_seconds"])
        ens = ShardedEnsemble(shards, MeanAggregator())
        hist = data.train

        def ens_util(e: ShardedEnsemble) -> dict[str, float]:
            return _utility(lambda r: e.score(data.user_keys[r], hist[r]), data)

        def views(e: ShardedEnsemble) -> np.ndarray:
            with torch.no_grad():
                v, _ = shard_views(e.shards, data.user_keys, hist)
                if e.overlay is not None:
                    v = e.overlay.apply(data.user_keys, v)
            return v.transpose(0, 1).reshape(data.n_users, -1).numpy()

        ens_base = ens_util(ens)
        ens_info = {
            "n_shards": n_shards,
            "shard_fit_seconds": fit_s,
            **ens_base,
            "ndcg_vs_full": ens_base["ndcg@20"] / base["ndcg@20"],
        }
        for a in attributes:
            n_cls = len(attribute(a).classes)
            y = labels[a]
            ens_rows.append(
                _row(
                    "ensemble",
                    "original (aggregated views)",
                    a,
                    ens_base,
                    ens_base,
                    _attacks(views(ens), y, n_cls, seed, bootstrap),
                    None,
                )
            )
            per_shard = [
                attack(
                    m.user.numpy()[yy >= 0],
                    yy[yy >= 0],
                    kind="mlp",
                    n_classes=n_cls,
                    seed=seed,
                    bootstrap=0,
                )["balanced_accuracy"]
                for m in shards
                for yy in [y[np.searchsorted(data.user_keys, m.user_keys)]]
            ]
            ens_rows[-1]["per_shard_mlp_balanced_accuracy"] = per_shard
            targets = np.flatnonzero(y >= 0)
            overlay, st = edit_ensemble(ens, data.user_keys, hist, y, targets, cfg=ecfg, seed=seed)
            edited_ens = ShardedEnsemble(shards, MeanAggregator(), overlay=overlay)
            util = ens_util(edited_ens)
            ens_rows.append(
                _row(
                    "ensemble",
                    f"post-{ecfg.space} default (aggregated views)",
                    a,
                    util,
                    ens_base,
                    _attacks(views(edited_ens), y, n_cls, seed, bootstrap),
                    st["seconds"],
                    edited_users=int(len(targets)),
                )
            )
    result: dict[str, Any] = {
        "benchmark": "attribute",
        "dataset": dataset,
        "seed": seed,
        "users": int(data.n_users),
        "items": int(data.n_items),
        "full_model": {**base, "fit_seconds": stats["fit_seconds"]},
        "edit_config": ecfg.model_dump(),
        "rows": rows + ens_rows,
        "per_user_scope": scope,
        "ensemble": ens_info,
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    stem = f"attribute-{dataset}"
    result["outputs"] = write_outputs(out_dir, stem, result, markdown(result))
    result["outputs"]["plot"] = str(plot(result, out_dir / f"{stem}.png"))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Attribute unlearning on {result['dataset']}",
        "",
        f"Full model NDCG@20 {result['full_model']['ndcg@20']:.4f}; attacker trained on 70% of "
        "users, tested on 30%, balanced accuracy [95% bootstrap interval].",
        "",
        "| setting | method | attribute | NDCG@20 | ratio | MLP BA | GBM BA | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a = r["attacks"]

        def ba(k: str, a: dict[str, Any] = a) -> str:
            ci = a[k].get("balanced_accuracy_ci", [float("nan")] * 2)
            return f"{a[k]['balanced_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

        sec = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['setting']} | {r['method']} | {r['attribute']} | {r['ndcg@20']:.4f} | "
            f"{r['ndcg_ratio']:.3f} | {ba('mlp')} | {ba('gbm')} | {sec} |"
        )
    lines += [
        "",
        "## Per-user scope (attacker trained on the other users, tested on those who asked)",
        "",
        "| attribute | users asking | MLP BA before -> after | GBM BA before -> after | others "
        "unchanged | NDCG ratio |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["per_user_scope"]:
        lines.append(
            f"| {s['attribute']} | {s['requesting_users']} | "
            f"{s['mlp_before']['balanced_accuracy']:.3f} -> "
            f"{s['mlp_after']['balanced_accuracy']:.3f} | "
            f"{s['gbm_before']['balanced_accuracy']:.3f} -> "
            f"{s['gbm_after']['balanced_accuracy']:.3f} | "
            f"{s['others_unchanged']} | {s['ndcg_ratio']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = sorted({r["attribute"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(attrs), figsize=(6 * len(attrs), 4.5), squeeze=False)
    for ax, a in zip(axes[0], attrs, strict=True):
        for r in (r for r in result["rows"] if r["attribute"] == a):
            marker = "o" if r["setting"] == "full" else "s"
            ax.scatter(r["ndcg_ratio"], r["worst_balanced_accuracy"], marker=marker)
            ax.annotate(
                f"{r['setting']}: {r['method']}",
                (r["ndcg_ratio"], r["worst_balanced_accuracy"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        chance = 1.0 / len(attribute(a).classes)
        ax.axhline(chance, color="grey", ls="--", lw=0.8, label="chance")
        ax.set_xlabel("NDCG@20 / unedited model's")
        ax.set_ylabel("attacker balanced accuracy (worse of MLP, GBM)")
        ax.set_title(f"{result['dataset']}: {a}")
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
