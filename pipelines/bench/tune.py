"""``recunlearn bench tune``: a seeded grid search of one sub-model's settings on the
validation rows, the way its defaults in ``recunlearn.config`` are chosen.

Each setting of the grid (``conf/bench/tune.yaml``, one grid per kind) trains the full model
through the train job's component trainer (early stopping, where the kind has it, on the
validation rows) and is scored by NDCG@20 on the validation rows with training items
excluded. Test rows are read once, for the chosen setting only, so the figure a default is
quoted with was not used to choose it. Results are merged per data set and kind.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from pipelines.bench.baselines import grid_search, valid_ndcg
from pipelines.bench.common import dataset_dir, load_split
from pipelines.bench.methods import make_method, production_method
from pipelines.bench.quality import settings_of
from pipelines.bench.suite import utility
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.data.split import SPLIT_RULE

log = logging.getLogger(__name__)


def load_grids(path: Path) -> dict[str, dict[str, list[Any]]]:
    """{kind: {setting: [values]}} from the tune config."""
    raw = yaml.safe_load(path.read_text()) or {}
    return {k: dict(v) for k, v in (raw.get("grids") or {}).items()}


def run(
    run_cfg: RunConfig,
    *,
    datasets: list[str],
    model: str,
    grid: dict[str, list[Any]],
    out_dir: Path,
    data_dir: str | None = None,
    seed: int = 2026,
    k: int = 20,
    n_shards: int = 1,
) -> dict[str, Any]:
    """The grid for the full model (``n_shards`` 1) or for the production sharding at K =
    ``n_shards``, scored by the ensemble's validation NDCG: the settings of the shards' size
    class (the grid's settings reach every shard: size classes are off while tuning)."""
    path = out_dir / "tune.json"
    out: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    method = "full" if n_shards == 1 else production_method(run_cfg)
    tag = model if n_shards == 1 else f"{model} at K={n_shards} ({method})"
    # size classes off: the grid's settings reach every shard
    base = settings_of(run_cfg, model).model_copy(update={"size_classes": ()})

    def fit(data: InteractionData, setting: dict[str, Any]) -> tuple[Any, float]:
        cfg = run_cfg.model_copy(update={"model": base.model_copy(update=setting)})
        t0 = time.perf_counter()
        fitted = make_method(method, cfg, n_shards).fit(data, seed)
        return fitted.model, time.perf_counter() - t0

    for name in datasets:
        data, _ = load_split(name, dataset_dir(name, data_dir), seed=seed)
        # the grid as drawn (no widening): a default's search is the record that chose it
        best, search = grid_search(
            grid, partial(fit, data), partial(valid_ndcg, data=data, k=k), widen=0
        )
        log.info("bench tune %s %s: chose %s", name, tag, search["chosen"])
        util, _ = utility(best, data, k)
        out.setdefault(name, {})[tag] = {
            "n_shards": n_shards,
            "split": SPLIT_RULE,
            "seed": seed,
            "fixed": base.model_dump(mode="json"),
            "grid": search["grid"],
            "chosen": {c: v for c, v in search["chosen"].items() if c != "fit_seconds"},
            "test": util,
            "at_grid_edge": search["at_grid_edge"],  # the optimum may lie beyond these ranges
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Sub-model settings chosen on validation",
        "",
        "Each setting trained on the training rows and scored by NDCG@20 on the validation rows; "
        "the chosen one's test NDCG@20 is read once, after the choice.",
        "",
    ]
    for name, models in result.items():
        for model, r in models.items():
            chosen = {c: v for c, v in r["chosen"].items() if c != "valid_ndcg"}
            lines += [
                f"## {name}, {model}",
                "",
                f"Chosen: {chosen} (validation NDCG@20 {r['chosen']['valid_ndcg']}, test NDCG@20 "
                f"{r['test'].get('ndcg@20')}); at the grid's edge: {r['at_grid_edge'] or 'none'}.",
                "",
            ]
            keys = [c for c in r["grid"][0] if c not in ("valid_ndcg", "fit_seconds")]
            lines += [
                "| " + " | ".join(keys) + " | valid NDCG@20 | fit s |",
                "|" + "---|" * (len(keys) + 2),
            ]
            for g in sorted(r["grid"], key=lambda g: -g["valid_ndcg"]):
                lines.append(
                    "| "
                    + " | ".join(str(g[c]) for c in keys)
                    + f" | {g['valid_ndcg']} | {g['fit_seconds']} |"
                )
            lines.append("")
    return "\n".join(lines)
