"""``recunlearn bench suite``: one protocol for every unlearning method, from a declared matrix.

The matrix (``conf/bench/suite.yaml``) is a list of blocks; every combination of a block's
data sets x models x methods x K x forget-set kinds x sizes is a *cell*, written as one JSON
file. A finished cell (same settings, same code schema) is skipped on a re-run, and trained
models are cached by what they were trained on, so the reference retrain of a forget set is
fitted once for all methods.

Protocol per data set (seeded): the per-user split (train / valid / test); users divided into
the attacker's pool (``mia.shadow_share``: half train the shadow recommender, half are its
non-members), never-seen users (``mia.nonmember_share``, the target's non-members) and the
target users, on whom every method trains. Per cell: draw the forget set among the target
users (random, core = most active, edge = least active), unlearn, and measure
- utility: NDCG / Recall / HR @ k of the retained users (full ranking, train + valid
  excluded, test as truth) for the original, unlearned and retrained (K=1) models;
- completeness: functional (the forgotten users' held-out NDCG under each model, and the
  paired difference to the method's own from-scratch replay and to the K=1 retrain),
  membership inference (AUC of forgotten vs never-seen users with bootstrap intervals, under
  the original, unlearned, replayed and retrained models; plus retained members vs never-seen
  on the original), parametric (distance to the replay against the seed spread);
- efficiency: fit and unlearn seconds, shards touched, speed-up over the K=1 retrain, bytes;
- fairness: A-IGF of the unlearned and retrained models; per-shard spread.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch

from pipelines.bench.common import dataset_dir, load_split
from pipelines.bench.methods import Fitted, Method, load_fitted, make_method, save_fitted
from recunlearn.config import RunConfig, SuiteConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.data.split import SPLIT_RULE
from recunlearn.evidence.completeness import functional_gap, parametric_evidence, score_evidence
from recunlearn.evidence.evaluation import per_user, with_truth
from recunlearn.evidence.fairness import a_igf, active_mask, draw_forget_users, shard_spread
from recunlearn.evidence.mia import MembershipAttack, fit_attack, item_vectors
from recunlearn.hashing import fingerprint
from recunlearn.models.base import lookup_rows
from recunlearn.seeding import make_seed

log = logging.getLogger(__name__)

CELL_SCHEMA = 1  # bump when a cell's protocol or fields change: finished cells are then rerun


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    method: str
    n_shards: int
    kind: str
    size: float

    @property
    def id(self) -> str:
        k = f"K{self.n_shards}" if self.method not in ("none", "full") else "K1"
        return f"{self.dataset}/{self.model}/{self.method}-{k}/{self.kind}-{self.size:g}"


def cells(cfg: SuiteConfig) -> list[Cell]:
    out: dict[str, Cell] = {}
    for b in cfg.matrix:
        for d in b.datasets:
            for m in b.models:
                for meth in b.methods:
                    ks = [1] if meth in ("none", "full") else b.n_shards
                    for k in ks:
                        for kind in b.kinds:
                            for size in b.sizes:
                                c = Cell(d, m, meth, k, kind, float(size))
                                out.setdefault(c.id, c)
    return list(out.values())


class DatasetContext:
    """What every cell of one data set shares: the split, the user roles, the attack, and a
    cache of trained models keyed by method, seed and training users."""

    def __init__(
        self, name: str, suite: SuiteConfig, run_cfg: RunConfig, cache: Path, data_dir: str | None
    ) -> None:
        self.name, self.suite, self.cfg = name, suite, run_cfg
        self.seed = make_seed(suite.seed, "suite", name)
        data, _ = load_split(
            name,
            dataset_dir(name, data_dir),
            seed=self.seed,
            valid=run_cfg.split.valid,
            test=run_cfg.split.test,
        )
        self.data = data
        rng = np.random.default_rng(make_seed(self.seed, "roles"))
        perm = rng.permutation(data.n_users)
        n_sh = int(suite.mia.shadow_share * data.n_users)
        n_non = int(suite.mia.nonmember_share * data.n_users)
        self.shadow_members = np.sort(perm[: n_sh // 2])
        self.shadow_nonmembers = np.sort(perm[n_sh // 2 : n_sh])
        self.never_seen = np.sort(perm[n_sh : n_sh + n_non])
        self.target = data.subset(perm[n_sh + n_non :])
        # the models' fingerprint: cached fits are only reused under the same settings
        self.model_fp = fingerprint(
            {
                "model": run_cfg.model.model_dump(mode="json"),
                "aggregator": run_cfg.aggregator.model_dump(mode="json"),
                "sharding": run_cfg.sharding.model_dump(mode="json"),
                "split": {**run_cfg.split.model_dump(mode="json"), "rule": SPLIT_RULE},
            }
        )
        # ... and only for the same users: the roles depend on the seed and the shares
        self.roles_fp = fingerprint(
            {
                "seed": suite.seed,
                "shadow": suite.mia.shadow_share,
                "nonmember": suite.mia.nonmember_share,
            }
        )[:8]
        self.cache = cache / name
        self._attacks: dict[str, MembershipAttack] = {}

    def rows_of(self, rows: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
        return self.data.user_keys[rows], self.data.train[rows]

    def attack(self, method: Method, spec: str) -> MembershipAttack:
        """The membership attack on ``method``'s models: its shadow recommender is the same
        method (the attacker knows the algorithm, as in Zhang et al.) fitted on the shadow
        members; the item vectors come from the attacker's own interactions."""
        if spec not in self._attacks:
            t0 = time.perf_counter()
            mia = self.suite.mia
            shadow, _ = self.cached(
                f"{spec}-shadow",
                lambda: method.fit(
                    self.data.subset(self.shadow_members), make_seed(self.seed, "shadow")
                ),
            )
            attacker_rows = np.sort(np.r_[self.shadow_members, self.shadow_nonmembers])
            vecs = item_vectors(
                self.data.train[attacker_rows], mia.dim, make_seed(self.seed, "svd")
            )
            self._attacks[spec] = fit_attack(
                shadow.model,
                self.rows_of(self.shadow_members),
                self.rows_of(self.shadow_nonmembers),
                vecs,
                n_rec=mia.n_rec,
                seed=make_seed(self.seed, "attack") % 2**31,
                resamples=mia.bootstrap,
            )
            log.info(
                "%s %s: attack ready in %.1fs, shadow AUC %s",
                self.name,
                spec,
                time.perf_counter() - t0,
                self._attacks[spec].shadow,
            )
        return self._attacks[spec]

    def cached(self, tag: str, train: Callable[[], Fitted]) -> tuple[Fitted, bool]:
        """A fitted model from the cache, or trained and stored. Returns (fitted, from_cache)."""
        path = self.cache / f"{tag}-{self.model_fp}-{self.roles_fp}.pt"
        if path.exists():
            return load_fitted(path, self.cfg.aggregator.fold_in_reg), True
        f = train()
        save_fitted(f, path)
        return f, False


@dataclass(frozen=True)
class ForgetSet:
    keys: np.ndarray  # the users whose data changes (all of it for user kinds)
    retained: InteractionData  # the target data without the forgotten data
    history: sp.csr_matrix  # per affected user: what the models may still see of them
    truth: sp.csr_matrix  # per affected user: what a model that forgot should not recover
    user_level: bool
    tag: str
    pairs: int
    items: int | None = None


def forget_set(
    target: InteractionData, kind: str, size: float, rng: np.random.Generator
) -> ForgetSet:
    """The forget set of a cell. User kinds (random / core / edge) forget whole users: history =
    their training rows, truth = their held-out rows. ``interactions`` forgets random
    training pairs and ``items`` every interaction with random items: the users stay, history
    = what they keep, truth = the forgotten pairs."""
    if kind in ("random", "core", "edge"):
        n = int(size) if size >= 1 else max(int(round(size * target.n_users)), 2)
        rows = draw_forget_users(target.train, kind, n, rng)
        keys = target.user_keys[rows]
        return ForgetSet(
            keys,
            target.without_users(keys),
            target.train[rows],
            (target.valid + target.test).tocsr()[rows],
            True,
            _forget_tag(keys),
            int(target.train[rows].nnz),
        )
    coo = target.train.tocoo()
    if kind == "interactions":
        n = int(size) if size >= 1 else max(int(round(size * coo.nnz)), 1)
        pick = np.sort(rng.choice(coo.nnz, n, replace=False))
        drop = sp.csr_matrix(
            (np.ones(n, np.float32), (coo.row[pick], coo.col[pick])), shape=target.train.shape
        )
        items, cut = None, None
    elif kind == "items":
        seen = np.flatnonzero(np.diff(target.train.tocsc().indptr) > 0)
        n = int(size) if size >= 1 else max(int(round(size * len(seen))), 1)
        items = np.sort(rng.choice(seen, n, replace=False))
        cut = np.zeros(target.n_items, bool)
        cut[items] = True
        drop = target.train.multiply(sp.csr_matrix(cut[None, :].astype(np.float32))).tocsr()
    else:
        raise ValueError(f"unknown forget-set kind {kind!r}")
    drop.eliminate_zeros()

    def minus(m: sp.csr_matrix, d: sp.csr_matrix) -> sp.csr_matrix:
        out = (m - m.multiply(d > 0)).tocsr()
        out.eliminate_zeros()
        return out

    keep_cols = (
        (lambda m: m)
        if cut is None
        else (lambda m: minus(m, m.multiply(sp.csr_matrix(cut[None, :].astype(np.float32)))))
    )
    retained = InteractionData(
        target.user_keys, minus(target.train, drop), keep_cols(target.valid), keep_cols(target.test)
    )
    rows = np.flatnonzero(np.diff(drop.indptr) > 0)
    tag = fingerprint({"pairs": np.stack(drop.nonzero()).tolist()})[:12]
    return ForgetSet(
        target.user_keys[rows],
        retained,
        retained.train[rows],
        drop[rows],
        False,
        tag,
        int(drop.nnz),
        None if items is None else int(len(items)),
    )


def _forget_tag(keys: np.ndarray) -> str:
    return fingerprint({"forget": sorted(map(str, keys))})[:12]


def utility(model: Any, data: InteractionData, k: int) -> tuple[dict[str, float], np.ndarray]:
    users = with_truth(data)
    per = per_user(model, data, users, k=k)
    means = {f"{m}@{k}": round(float(v.mean()), 5) for m, v in per.items()}
    full = np.full(data.n_users, np.nan)
    full[users] = per["ndcg"]
    return {**means, "users": int(len(users))}, full


def run_cell(ctx: DatasetContext, cell: Cell) -> dict[str, Any]:
    suite, k = ctx.suite, ctx.suite.k
    method: Method = make_method(cell.method, ctx.cfg, cell.n_shards)
    target, seed = ctx.target, ctx.seed
    spec = f"{cell.method}-K{cell.n_shards}-{cell.model}"
    original, _ = ctx.cached(f"{spec}-s{seed}-all", lambda: method.fit(target, seed))

    fs = forget_set(
        target,
        cell.kind,
        cell.size,
        np.random.default_rng(make_seed(seed, "forget", cell.kind, cell.size)),
    )
    forget_keys, retained, hist, truth = fs.keys, fs.retained, fs.history, fs.truth
    ftag = fs.tag

    t0 = time.perf_counter()
    unlearned = method.unlearn(original, retained, forget_keys, seed)
    unlearn_wall = time.perf_counter() - t0
    # A single model's replay is the K=1 retrain itself: one cache entry serves both, and
    # every method of the forget set shares it.
    k1 = f"full-K1-{cell.model}"
    reference, _ = ctx.cached(
        f"{k1}-s{seed}-{ftag}", lambda: make_method("full", ctx.cfg, 1).fit(retained, seed)
    )
    replay_spec = spec if method.sharded else k1
    replay = (
        reference
        if not method.sharded
        else ctx.cached(
            f"{spec}-s{seed}-{ftag}-replay", lambda: method.replay(original, retained, seed)
        )[0]
    )
    spread = [
        ctx.cached(
            f"{replay_spec}-s{s}-{ftag}-replay",
            partial(method.replay, original, retained, s),
        )[0].model
        for s in (make_seed(seed, "spread", i) for i in range(suite.parametric_seeds))
    ]

    # ---- utility and fairness on the retained users
    util: dict[str, Any] = {}
    per_user: dict[str, np.ndarray] = {}
    for name, m in (
        ("original", original.model),
        ("unlearned", unlearned.model),
        ("retrained", reference.model),
    ):
        util[name], per_user[name] = utility(m, retained, k)
    util["unlearned_vs_retrained"] = round(
        util["unlearned"][f"ndcg@{k}"] / util["retrained"][f"ndcg@{k}"], 4
    )
    has = ~np.isnan(per_user["unlearned"])
    active = active_mask(retained.train, suite.top_share)
    fairness: dict[str, Any] = {name: a_igf(v[has], active[has]) for name, v in per_user.items()}
    if method.sharded:
        shard_of = unlearned.labels[lookup_rows(unlearned.keys, retained.user_keys)]
        fairness["shard_spread_unlearned"] = shard_spread(per_user["unlearned"][has], shard_of[has])
        fairness["shard_spread_retrained"] = shard_spread(per_user["retrained"][has], shard_of[has])

    # ---- completeness
    functional = {
        "vs_replay": functional_gap(
            unlearned.model,
            replay.model,
            forget_keys,
            hist,
            truth,
            original=original.model,
            k=k,
            seed=seed % 2**31,
        ),
        "vs_retrained_k1": functional_gap(
            unlearned.model, reference.model, forget_keys, hist, truth, k=k, seed=seed % 2**31
        ),
        "known_to_unlearned": int(np.asarray(unlearned.model.knows(forget_keys)).sum()),
        "known_to_original": int(np.asarray(original.model.knows(forget_keys)).sum()),
    }
    member_rows = np.random.default_rng(make_seed(seed, "members")).choice(
        retained.n_users, min(len(ctx.never_seen), retained.n_users), replace=False
    )
    mia = (
        _mia(ctx, method, spec, fs, original, unlearned, replay, reference, retained, member_rows)
        if fs.user_level
        else {
            "applicable": False,
            "reason": "user membership: the users stay members when only some of their data goes",
        }
    )
    try:
        parametric = parametric_evidence(unlearned.model, replay.model, spread)
    except ValueError as exc:
        parametric = {"error": str(exc)}
    sample = member_rows[:500]
    parametric["scores"] = score_evidence(
        unlearned.model,
        replay.model,
        [m for m in spread],
        retained.user_keys[sample],
        retained.train[sample],
    )

    ref_fit = reference.seconds["fit"]
    efficiency = {
        "original_fit_seconds": round(original.seconds["fit"], 3),
        "unlearn_seconds": round(unlearn_wall, 3),
        "unlearn_fit_seconds": round(unlearned.seconds.get("fit", 0.0), 3),
        "retrain_k1_fit_seconds": round(ref_fit, 3),
        # the control forgets nothing, so it has no speed-up to report
        "speedup_vs_retrain_k1": None
        if cell.method == "none"
        else round(ref_fit / unlearn_wall, 2),
        "shards_touched": unlearned.shards_touched,
        "model_bytes_original": original.storage_bytes(),
        "model_bytes_unlearned": unlearned.storage_bytes(),
        "partition_seconds": round(original.seconds.get("partition", 0.0), 3),
    }
    return {
        "cell": cell.id,
        "spec": cell.__dict__,
        "forget": {
            "users": int(len(forget_keys)),
            "kind": cell.kind,
            "pairs": fs.pairs,
            "items": fs.items,
            "mean_train_items": round(float(np.diff(hist.indptr).mean()), 2),
        },
        "users": {
            "target": int(target.n_users),
            "retained": int(retained.n_users),
            "never_seen": int(len(ctx.never_seen)),
            "shadow": int(len(ctx.shadow_members) + len(ctx.shadow_nonmembers)),
        },
        "utility": util,
        "completeness": {"functional": functional, "mia": mia, "parametric": parametric},
        "efficiency": efficiency,
        "fairness": fairness,
    }


def _mia(
    ctx: DatasetContext,
    method: Method,
    spec: str,
    fs: ForgetSet,
    original: Fitted,
    unlearned: Fitted,
    replay: Fitted,
    reference: Fitted,
    retained: InteractionData,
    member_rows: np.ndarray,
) -> dict[str, Any]:
    """Membership inference of the forgotten users against the never-seen ones, under every
    model of the cell, with the attack built for ``method``."""
    attack = ctx.attack(method, spec)
    b = ctx.suite.mia.bootstrap
    pos = (fs.keys, fs.history)
    neg = ctx.rows_of(ctx.never_seen)
    mia: dict[str, Any] = {
        "attacker_shadow": attack.shadow,
        "members_vs_never_seen_original": attack.evidence(
            original.model,
            (retained.user_keys[member_rows], retained.train[member_rows]),
            neg,
            resamples=b,
            seed=1,
        ),
    }
    for name, m in (
        ("original", original.model),
        ("unlearned", unlearned.model),
        ("replay", replay.model),
        ("retrained", reference.model),
    ):
        mia[f"forgotten_vs_never_seen_{name}"] = attack.evidence(m, pos, neg, resamples=b, seed=2)
    # The retrained model of a method is its replay (the K=1 retrain for single models): the
    # attack was built for that method, so that is where the comparison is like for like.
    ret_ci = mia["forgotten_vs_never_seen_replay"]["ci"]
    unl = mia["forgotten_vs_never_seen_unlearned"]["auc"]
    mia["unlearned_inside_retrained_ci"] = bool(ret_ci and ret_ci[0] <= unl <= ret_ci[1])
    orig_ci = mia["members_vs_never_seen_original"]["ci"]
    mia["original_separates_members"] = bool(orig_ci and orig_ci[0] > 0.5)
    return mia


def cell_fingerprint(cell: Cell, suite: SuiteConfig, ctx_fp: str) -> str:
    return fingerprint(
        {
            "cell": cell.__dict__,
            "schema": CELL_SCHEMA,
            "seed": suite.seed,
            "mia": suite.mia.model_dump(mode="json"),
            "k": suite.k,
            "top_share": suite.top_share,
            "spread": suite.parametric_seeds,
            "models": ctx_fp,
        }
    )


def run(
    suite: SuiteConfig,
    run_cfg: RunConfig,
    *,
    out_dir: Path,
    data_dir: str | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """Run every cell not already finished; return the index of all cells' JSON files."""
    torch.manual_seed(0)
    t_all = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    contexts: dict[str, DatasetContext] = {}
    index, ran, skipped = [], 0, 0
    for cell in cells(suite):
        if only and only not in cell.id:
            continue
        if cell.dataset not in contexts:
            contexts[cell.dataset] = DatasetContext(
                cell.dataset, suite, run_cfg, out_dir / "cache", data_dir
            )
        ctx = contexts[cell.dataset]
        path = out_dir / "cells" / (cell.id.replace("/", "__") + ".json")
        fp = cell_fingerprint(cell, suite, ctx.model_fp)
        if path.exists() and json.loads(path.read_text()).get("fingerprint") == fp:
            skipped += 1
            index.append(str(path.relative_to(out_dir)))
            log.info("cell %s: finished before, skipped", cell.id)
            continue
        t0 = time.perf_counter()
        result = run_cell(ctx, cell)
        result.update(fingerprint=fp, wall_seconds=round(time.perf_counter() - t0, 2))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=float))
        tmp.replace(path)
        ran += 1
        index.append(str(path.relative_to(out_dir)))
        log.info("cell %s: %.1fs", cell.id, result["wall_seconds"])
    summary = {
        "benchmark": "suite",
        "cells": index,
        "ran": ran,
        "skipped": skipped,
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    (out_dir / "suite.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_cells(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out_dir / "cells").glob("*.json"))]
