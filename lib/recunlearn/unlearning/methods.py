"""Unlearning methods: one protocol, one registry.

A method turns the published model version and the batch's :class:`Targets` into the
components of the next version. The unlearn job (``pipelines.unlearn``) is the one
orchestrator: it reads the requests, records the targets, deletes and vacuums the rows, calls
the method's ``update`` with an :class:`UpdateContext` (the job's I/O: loading and saving
checkpoints, the touched shards' rows from before the delete, retraining on the engines),
publishes, records the ledger and audits. What differs between methods is declared here:

- ``guarantee``: exact (the new version equals, or is, a model of the retained data) or
  approximate (the exact retrain follows when the policy says it is due);
- ``models``: the sub-model kinds it can update (None: every kind);
- ``needs_rows``: whether it reads the touched shards' rows before they are deleted;
- ``completes``: the request states it takes beyond received/planned (the exact retrain also
  finishes requests a stopped run deleted and requests a fast method answered);
- ``retrains``: whether it trains shard models from scratch (the job then also rebuilds the
  attribute edits in effect and records the functional evidence).

The config (``unlearn.method``), the CLI's choices, the job and the benchmarks all read
:data:`METHODS`; :func:`get_method` rejects unknown names. This module imports nothing heavy:
``recunlearn forget`` loads the config without torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recunlearn.storage.layout import now_utc
from recunlearn.storage.versions import CheckpointMeta, Component, ModelVersion

if TYPE_CHECKING:
    from recunlearn.config import RunConfig
    from recunlearn.data.interactions import InteractionData
    from recunlearn.models.base import Recommender
    from recunlearn.unlearning.targets import Targets


class Guarantee(StrEnum):
    EXACT = "exact"
    APPROXIMATE = "approximate"


@dataclass
class Update:
    """What a method made of one version."""

    shards: dict[int, Component]  # the new components of the shards it changed
    reference: Component | None  # the reference the new version serves (None: it has none)
    changed: list[int]  # the shards updated or retrained: their old checkpoints held forgotten rows
    guarantee: str  # the new version's guarantee, in words
    aggregator: Component | None = None  # a refit aggregator (None: the current one stays)
    details: dict[int, dict[str, Any]] = field(default_factory=dict)  # per shard: what was done
    pending_exact: dict[str, Any] | None = None  # what the exact tier still has to retrain
    compute: dict[str, Any] = field(default_factory=dict)  # fit seconds, wall seconds
    order: list[int] | None = None  # a sequential run's curriculum order, when retrained


class UpdateContext(Protocol):
    """The unlearn job's side of an update: its config, versions and I/O."""

    cfg: RunConfig
    job_id: str
    delete_version: int  # the interactions version right after the delete
    train_version: (
        int  # the version a retrain reads (later than delete_version after a repartition)
    )
    exact_guarantee: str  # what an exact retrain under the job's partition mode guarantees

    def load(self, component: Component) -> Recommender: ...

    def rows_before(self, shard: int) -> InteractionData:
        """The shard's rows as they were before the delete (``needs_rows`` methods only)."""

    def save(self, shard: int | None, model: Recommender, meta: CheckpointMeta) -> Component: ...

    def retrain(self, shards: list[int], *, reference: bool) -> dict[str, Any]:
        """Train ``shards`` (and the reference) from scratch at ``train_version``:
        ``{"shards": {k: Component}, "reference": Component | None, "wall_seconds", "order"}``."""

    def refit_aggregator(self, shards: dict[int, Component]) -> Component: ...


class UnlearningMethod(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def guarantee(self) -> Guarantee: ...

    @property
    def models(self) -> frozenset[str] | None:
        """The sub-model kinds it updates (None: every kind)."""

    @property
    def needs_rows(self) -> bool: ...

    @property
    def completes(self) -> tuple[str, ...]: ...

    @property
    def retrains(self) -> bool: ...

    @property
    def summary(self) -> str: ...

    @property
    def ledger_guarantee(self) -> str:
        """The ledger's ``guarantee`` for a request this method answered."""

    def update(self, version: ModelVersion, targets: Targets, ctx: UpdateContext) -> Update: ...


def _updated_meta(
    base: Component,
    shard: int | None,
    ctx: UpdateContext,
    *,
    n_users: int,
    pairs: int,
    seconds: float,
    delta_version: int,
    extra: dict[str, Any],
) -> CheckpointMeta:
    """The sidecar of a component updated in place from ``base``."""
    return CheckpointMeta(
        shard_id=shard,
        delta_version=delta_version,
        job_id=ctx.job_id,
        config_fingerprint=base.config_fingerprint,
        seed=base.seed,
        fit_seconds=seconds,
        epochs=0,
        valid_ndcg=base.valid_ndcg,
        n_users=n_users,
        n_train=int(base.n_train or 0) - pairs,
        extra={"update_of": base.sha256, **extra},
    )


def _step_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    fields = (
        "kind",
        "pairs",
        "users",
        "rounds",
        "index_rows_recomputed",
        "cg_iterations",
        "cg_residual",
        "steps",
        "stopped",
        "block_users",
        "block_items",
        "terms",
    )
    return {
        "pairs": sum(i["pairs"] for i in infos),
        "seconds": round(sum(i["seconds"] for i in infos), 4),
        "steps": [{f: i.get(f) for f in fields if f in i} for i in infos],
    }


# --------------------------------------------------------------------------- exact retrain
@dataclass(frozen=True)
class ShardRetrain:
    """SISA's exact path: retrain every touched shard from scratch on the retained rows (with
    sequential training, every stage from the earliest touched group on), refit the aggregator,
    and retrain the reference when the version has one."""

    name: str = "exact"
    guarantee: Guarantee = Guarantee.EXACT
    models: frozenset[str] | None = None
    needs_rows: bool = False
    completes: tuple[str, ...] = ("deleted", "approximate")
    retrains: bool = True
    summary: str = "retrain the touched shards from scratch, refit the aggregator (every sub-model)"

    @property
    def ledger_guarantee(self) -> str:
        return "exact"

    def update(self, version: ModelVersion, targets: Targets, ctx: UpdateContext) -> Update:
        retrain = sorted(set(targets.touched) | set(targets.also))
        if version.sequential:
            retrain = version.groups_from(retrain)
        # a fast-tier version dropped the reference (trained on what it forgot): retrain it too
        reference = ctx.cfg.unlearn.retrain_reference and (
            version.reference is not None or bool(version.pending_exact)
        )
        trained = ctx.retrain(retrain, reference=reference)
        shards = {**version.shards, **trained["shards"]}
        agg = ctx.refit_aggregator(shards)
        compute = {
            "shard_fit_seconds": {str(k): c.fit_seconds for k, c in trained["shards"].items()},
            "aggregator_fit_seconds": agg.fit_seconds,
            "reference_fit_seconds": trained["reference"].fit_seconds
            if trained["reference"]
            else None,
            "train_wall_seconds": trained["wall_seconds"],
        }
        return Update(
            shards=trained["shards"],
            reference=trained["reference"],
            changed=retrain,
            guarantee=ctx.exact_guarantee,
            aggregator=agg,
            compute=compute,
        )


# --------------------------------------------------------------------------- exact in place
EXACT_UPDATE_GUARANTEE = (
    "exact ({method}, model-specific): the forgotten rows are deleted and vacuumed, and every "
    "shard "
    "that held them, and the reference, was updated to the model of the retained data: {detail}"
)


@dataclass(frozen=True)
class ModelExact:
    """A sub-model that forgets exactly in place (``recunlearn.models.base.Forgettable``):
    every touched shard and the reference are updated, nothing is retrained."""

    name: str
    model: str | None  # the kind it updates; None: every kind that forgets exactly in place
    detail: str  # what "exact" means for this model
    guarantee: Guarantee = Guarantee.EXACT
    needs_rows: bool = False
    completes: tuple[str, ...] = ()
    retrains: bool = False

    @property
    def models(self) -> frozenset[str]:
        from recunlearn.models import MODELS

        return frozenset(
            {self.model} if self.model else {k for k, m in MODELS.items() if m.forgets}
        )

    @property
    def summary(self) -> str:
        kinds = " / ".join(sorted(self.models))
        return f"exact in-place update of the touched shards, no retrain (model.kind {kinds})"

    @property
    def ledger_guarantee(self) -> str:
        return f"exact:{self.name}"

    def update(self, version: ModelVersion, targets: Targets, ctx: UpdateContext) -> Update:
        from recunlearn.models.base import Forgettable

        shards: dict[int, Component] = {}
        details: dict[int, dict[str, Any]] = {}
        reference = version.reference
        # each touched shard, then the reference (None) when the version has one
        todo: list[int | None] = [*targets.touched, *([None] if reference is not None else [])]
        for k in todo:
            base = reference if k is None else version.shards[k]
            assert base is not None
            model = ctx.load(base)
            if not isinstance(model, Forgettable):
                raise TypeError(
                    f"unlearn --method {self.name}: the "
                    f"{k if k is not None else 'reference'} model ({type(model).__name__}) "
                    "does not forget exactly in place"
                )
            info = _step_info(apply_exact(model, targets))
            meta = _updated_meta(
                base,
                k,
                ctx,
                n_users=len(model.user_keys),
                pairs=info["pairs"],
                seconds=info["seconds"],
                delta_version=ctx.delete_version,  # as a retrain at the delete would be
                extra={"exact_update": self.name},
            )
            saved = ctx.save(k, model, meta)
            if k is None:
                reference = saved
            else:
                shards[k], details[k] = saved, info
        return Update(
            shards=shards,
            reference=reference,
            changed=list(targets.touched),
            guarantee=EXACT_UPDATE_GUARANTEE.format(method=self.name, detail=self.detail),
            details=details,
        )


def apply_exact(model: Any, targets: Targets) -> list[dict[str, Any]]:
    """A ``Forgettable`` model's exact update for the targets: users, items, interactions."""
    out = []

    def pairs() -> dict[str, Any]:
        rows = model.rows_of(np.array([k for k, _ in targets.pairs]))
        items = np.array([i for _, i in targets.pairs])
        held = rows >= 0
        return model.forget_pairs(rows[held], items[held])

    steps = (
        ("users", targets.users, lambda: model.forget_users(np.array(targets.users))),
        ("items", targets.items, lambda: model.forget_items(np.array(targets.items))),
        ("interactions", targets.pairs, pairs),
    )
    for kind, wanted, call in steps:
        if wanted:
            t0, before = time.perf_counter(), model.n_train
            info = dict(call())
            out.append(
                {
                    "kind": kind,
                    **info,
                    "pairs": before - model.n_train,
                    "seconds": time.perf_counter() - t0,
                }
            )
    return out


# --------------------------------------------------------------------------- approximate
APPROXIMATE_GUARANTEE = (
    "approximate ({method}): the forgotten rows are deleted and vacuumed; the shard models that "
    "held them were updated in place by {method} and are not yet retrained; the exact retrain of "
    "shards {shards} is pending (see pending_exact)"
)


@dataclass(frozen=True)
class Approximate:
    """The fast tier over BPR-MF shards (``recunlearn.unlearning.fast_bpr``): each touched shard
    model is updated in place from the rows it was trained on (read before the delete, held in
    memory only). The reference held the forgotten rows and is dropped; the version records what the
    exact tier has to retrain (``pending_exact``)."""

    name: str
    summary: str
    guarantee: Guarantee = Guarantee.APPROXIMATE
    models: frozenset[str] | None = frozenset({"bpr"})
    needs_rows: bool = True
    completes: tuple[str, ...] = ()
    retrains: bool = False

    @property
    def ledger_guarantee(self) -> str:
        return f"approximate:{self.name}"

    def update(self, version: ModelVersion, targets: Targets, ctx: UpdateContext) -> Update:
        from recunlearn.hashing import fingerprint
        from recunlearn.models.bpr import BPRMF
        from recunlearn.seeding import make_seed
        from recunlearn.unlearning.fast_bpr import BPRUnlearner

        cfg = ctx.cfg
        pending = dict(version.pending_exact or {})
        removed_rows = {int(k): v for k, v in (pending.get("removed_rows") or {}).items()}
        shards: dict[int, Component] = {}
        details: dict[int, dict[str, Any]] = {}
        for k in targets.touched:
            base = version.shards[k]
            model = ctx.load(base)
            if not isinstance(model, BPRMF):
                raise TypeError(
                    f"unlearn --method {self.name} updates BPR-MF shards, not "
                    f"{type(model).__name__}"
                )
            data = ctx.rows_before(k)
            un = BPRUnlearner(
                model,
                _aligned(model.user_keys, data.train, data),
                cfg.unlearn.fast,
                reg=cfg.model.reg,
                holdout=_aligned(model.user_keys, data.valid, data),
                seed=make_seed(cfg.seed, "fast", ctx.job_id, k) % 2**31,
            )
            info = _step_info(apply_approximate(un, targets, self.name))
            removed_rows[k] = removed_rows.get(k, 0) + info["pairs"]
            # trained on the rows at its delta_version, then had the forgotten rows taken out
            # approximately: the audit treats it as trained at that version
            meta = _updated_meta(
                base,
                k,
                ctx,
                n_users=len(model.user_keys),
                pairs=info["pairs"],
                seconds=info["seconds"],
                delta_version=int(base.delta_version or 0),
                extra={
                    "approximate": {
                        "method": self.name,
                        "applied_at_version": ctx.delete_version,
                        "fast_config": fingerprint(cfg.unlearn.fast),
                    }
                },
            )
            shards[k], details[k] = ctx.save(k, model, meta), info
        pend_shards = sorted(set(pending.get("shards", [])) | set(targets.touched))
        pending_exact = {
            "shards": pend_shards,
            "aggregator": version.aggregator.kind != "mean",
            "requests": sorted(set(pending.get("requests", [])) | set(targets.shards_of)),
            "removed_rows": {str(k): v for k, v in sorted(removed_rows.items())},
            "since": pending.get("since") or now_utc().isoformat(),
            "method": self.name,
        }
        return Update(
            shards=shards,
            reference=None,
            changed=list(targets.touched),
            guarantee=APPROXIMATE_GUARANTEE.format(method=self.name, shards=pend_shards),
            details=details,
            pending_exact=pending_exact,
        )


def _aligned(keys: np.ndarray, m: Any, data: InteractionData) -> Any:
    """``data``'s rows for ``keys`` (the model's users, in its row order); empty where absent."""
    import scipy.sparse as sp

    from recunlearn.models.base import lookup_rows

    pos = lookup_rows(data.user_keys, keys)
    have = np.flatnonzero(pos >= 0)
    sel = sp.csr_matrix(
        (np.ones(len(have), np.float32), (have, pos[have])), shape=(len(keys), data.n_users)
    )
    return (sel @ m).tocsr()


def apply_approximate(un: Any, targets: Targets, method: str) -> list[dict[str, Any]]:
    """The targets' updates to one shard model: users, then items, then single interactions
    (a target the shard does not hold changes nothing)."""
    out = []
    if targets.users:
        out.append({"kind": "users", **un.forget_users(np.array(targets.users), method)})
    if targets.items:
        out.append({"kind": "items", **un.forget_items(np.array(targets.items), method)})
    if targets.pairs:
        rows = un.model.rows_of(np.array([k for k, _ in targets.pairs]))
        items = np.array([i for _, i in targets.pairs])
        held = rows >= 0
        out.append({"kind": "interactions", **un.forget_pairs(rows[held], items[held], method)})
    return out


# --------------------------------------------------------------------------- the registry
_ALL: tuple[UnlearningMethod, ...] = (
    ShardRetrain(),
    Approximate(
        "scif",
        "BPR fast tier: one Newton step with a stochastic conjugate-gradient "
        "inverse Hessian-vector product (SCIF)",
    ),
    Approximate("influence", "BPR fast tier: a first-order influence update of the touched rows"),
    Approximate("finetune", "BPR fast tier: fine-tune the touched shard on its retained rows"),
    Approximate(
        "ascent",
        "BPR fast tier: gradient ascent on the forgotten pairs, stopped at the held-out level",
    ),
    ModelExact(
        "als",
        "wmf",
        "the WMF factors re-converged from the current ones until every row's "
        "normal equations on the retained data hold to the training tolerance (a retrain "
        "from scratch meets the same test; it differs from this model as much as a retrain "
        "with another seed does)",
    ),
    ModelExact(
        "knn",
        "itemknn",
        "the item-kNN index equals, bit for bit, the index rebuilt without the rows",
    ),
    ModelExact(
        "ease",
        "ease",
        "EASE's Gram matrix counts only the retained rows and its inverse "
        "was updated by Woodbury to the refit's to float64 round-off",
    ),
    ModelExact(
        "inplace",
        None,
        "the model's own exact update (recunlearn.models.base.Forgettable), "
        "equal to a refit on the retained rows to the tolerance its contract test states",
    ),
)
METHODS: dict[str, UnlearningMethod] = {m.name: m for m in _ALL}


def get_method(name: str) -> UnlearningMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown unlearning method {name!r}: one of {', '.join(METHODS)}"
        ) from None


def check_model(method: UnlearningMethod, kind: str) -> None:
    """Raise when ``method`` cannot update sub-models of ``kind``."""
    if method.models is not None and kind not in method.models:
        raise ValueError(
            f"unlearn.method={method.name} updates {' / '.join(sorted(method.models))} "
            f"models, but model.kind={kind}"
        )
