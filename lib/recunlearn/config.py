"""Typed, frozen configuration. ``conf/*.yaml`` is data; this module gives it a schema.

Every component gets its own model with documented fields and cross-field checks at
construction. ``fingerprint`` hashes the canonical JSON of a resolved config; it is stored
beside every checkpoint and report so a result can be traced to the exact settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from recunlearn.errors import ConfigError
from recunlearn.models import FACTOR_MODELS, MODELS
from recunlearn.unlearning.methods import METHODS, check_model


def _one_of(table: dict[str, Any], what: str) -> AfterValidator:
    """A string field whose value must name an entry of a registry ``table``."""

    def check(value: str) -> str:
        if value not in table:
            raise ValueError(f"unknown {what} {value!r}: one of {', '.join(table)}")
        return value

    return AfterValidator(check)


ModelKindName = Annotated[str, _one_of(MODELS, "model kind")]
MethodName = Annotated[str, _one_of(METHODS, "unlearning method")]

DATA_DIR_ENV = "RECUNLEARN_HOME"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetConfig(_Frozen):
    name: str = Field("movielens-100k", description="Data set name, for reports and fetch.")
    format: Literal[
        "ml-100k",
        "ml-1m",
        "ml-1m-implicit",
        "amazon-json",
        "amazon-ratings",
        "lfm2b-events",
        "lfm2b-counts",
        "log",
    ] = Field(
        "ml-100k",
        description="Reader to use for the raw files: MovieLens (ml-100k u.data, ml-1m "
        "ratings.dat, ml-1m-implicit interactions.csv), Amazon reviews (amazon-json: JSON lines "
        "with "
        "2014/2018 or 2023 field names; amazon-ratings: headerless item,user,rating,timestamp "
        "CSV), "
        "LFM-2B (lfm2b-events: listening-events.tsv; lfm2b-counts: listening-counts.tsv), or a "
        "generic CSV/Parquet log (columns).",
    )
    path: str | None = Field(
        None, description="Raw file or folder; None means data_dir/raw/<name> (fetched)."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="For format=log: maps user, item, rating, timestamp to source columns.",
    )
    separator: str = Field(",", description="For format=log CSV files: field separator.")
    timestamp_format: str | None = Field(
        None,
        description="For format=log: a text timestamp's Spark datetime pattern (e.g. "
        "'yyyy-MM-dd HH:mm:ss', read as UTC); None: epoch seconds.",
    )
    min_rating: float | None = Field(
        None, description="Keep only ratings >= this as positives (None keeps all)."
    )
    min_user_interactions: int = Field(
        1,
        ge=1,
        description="k-core filter: drop users with fewer distinct items than this (after "
        "the one-row-per-pair dedup and min_rating). 1 keeps every user.",
    )
    min_item_interactions: int = Field(
        1, ge=1, description="k-core filter: drop items with fewer users than this."
    )
    kcore_rounds: int = Field(
        10,
        ge=1,
        description="k-core filter: at most this many rounds of dropping users, then items, "
        "below their minimum (each drop can push the other side below); it stops at the "
        "first round that drops nothing, which is the k-core. The ingest stats and the "
        "interactions table's commit record what it did.",
    )
    on_malformed: Literal["quarantine", "fail"] = Field(
        "quarantine",
        description="Malformed or truncated rows: quarantine (ingest the good rows; "
        "record each bad one in tables/quarantine by reason and keyed fingerprint, never its "
        "content) or fail (ingest nothing; the error counts them by reason).",
    )


class EvaluationConfig(_Frozen):
    """How a published version is evaluated (``recunlearn evaluate``, the run report)."""

    max_users: int = Field(
        5_000,
        ge=10,
        description="Test users evaluated at most: past it, a seeded sample of this many (the "
        "same users for the ensemble and the reference); the sample's size and the population "
        "are reported. Full ranking costs users x items x (K + 1) scores, and on a growing log "
        "both grow: on LFM-2B-like logs evaluating every user took 38.6 s at 1M events (2,500 "
        "users) and 397 s at 3M (7,500), 10x for 3x. Capped, the cost grows with the items "
        "only; NDCG@20 over 5,000 users has a standard error of about 0.004.",
    )


class SplitConfig(_Frozen):
    valid: float = Field(0.1, gt=0, lt=0.5, description="Share of each user's rows in validation.")
    test: float = Field(0.1, gt=0, lt=0.5, description="Share of each user's rows in test.")

    @model_validator(mode="after")
    def _fits(self) -> SplitConfig:
        if self.valid + self.test >= 0.6:
            raise ValueError(
                f"split.valid + split.test = {self.valid + self.test} leaves too little to train"
            )
        return self


class PseudonymConfig(_Frozen):
    key_file: str | None = Field(
        "secrets/pseudonym.key",
        description="Secret for user keys, relative to data_dir; RECUNLEARN_PSEUDONYM_KEY wins.",
    )
    create_if_missing: bool = Field(True, description="Generate the key file on first use.")


class ShardingConfig(_Frozen):
    n_shards: int = Field(10, ge=1, le=1024, description="K, the number of user shards.")
    method: Literal["sinkhorn", "kmeans", "random"] = Field(
        "sinkhorn",
        description="How users are split: UltraRE's balanced OT clustering of user "
        "embeddings (sinkhorn), RecEraser's balanced k-means with a capacity cap (kmeans, UBP), "
        "or SISA's random split.",
    )
    capacity: float = Field(1.2, ge=1.0, description="kmeans: at most this x n/K users per shard.")
    unit: Literal["user", "item", "interaction"] = Field(
        "user",
        description="What is clustered into shards: users (UBP; a user's data in one "
        "shard), items (IBP) or interactions (InBP); with items or interactions one user's data "
        "lies in several shards, and forgetting the user retrains all of them.",
    )
    group_epochs: int = Field(
        10,
        ge=1,
        description="LASER (sequential training): most epochs per group stage, each "
        "stage early-stopped on the validation pairs of the groups seen so far.",
    )
    rows_per_file: int = Field(
        500_000,
        ge=1,
        description="The partition step rewrites the interactions table clustered by (shard, "
        "user key) into files of about this many rows (at least one per shard): a user's rows "
        "then lie in one file (two at a boundary), so a one-user delete rewrites about this "
        "many rows, not the shard.",
    )
    embedding: Literal["als", "sketch"] = Field(
        "als",
        description="The user vectors the clustering runs on: als, Spark's implicit ALS "
        "factors (als_iterations passes over the training rows); or sketch, a random "
        "projection of each user's items (each weighted 1/sqrt(its popularity)) refined by "
        "sketch_iterations power steps: a randomised range finder of the user-item matrix, "
        "1 + 2 x sketch_iterations passes, for logs where ALS is the partition step's cost.",
    )
    sketch_iterations: int = Field(
        1,
        ge=0,
        description="Power steps of the sketch (each: two joins and aggregations). On "
        "planted taste groups, 0 leaves a random projection's noise (27 of 40 users of a group "
        "in its shard), 1 recovers the groups (40 of 40).",
    )
    embedding_rank: int = Field(16, ge=2, description="Rank of the user embeddings.")
    als_iterations: int = Field(10, ge=1)
    als_reg: float = Field(0.05, gt=0)
    kmeans_iterations: int = Field(20, ge=1, description="Outer OT k-means iterations.")
    sinkhorn_epsilon: float = Field(
        0.05, gt=0, description="Entropic regulariser, relative to the cost scale."
    )
    balance_tolerance: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="sinkhorn and random: every shard must hold within this "
        "share of n/K users (kmeans is bounded by its capacity instead).",
    )
    row_tolerance: float | None = Field(
        0.5,
        gt=0,
        description="Then swap users (counts kept) until no shard holds more than "
        "(1 + this) x the mean training rows; a shard's retraining cost follows its rows. "
        "None: balance users only.",
    )

    @model_validator(mode="after")
    def _sketch_is_for_users(self) -> ShardingConfig:
        if self.embedding == "sketch" and self.unit != "user":
            raise ValueError(
                f"sharding.embedding=sketch embeds users; unit={self.unit} clusters ALS item "
                "factors: use embedding=als"
            )
        return self


class SizeClass(_Frozen):
    """Settings for fits on small data: a shard at K = 10 sees a tenth of the users, and the
    regularisation that suits the full model can starve it."""

    max_train: int = Field(ge=1, description="Applies to fits on at most this many training rows.")
    set: dict[str, Any] = Field(description="The kind's settings for those fits (by field name).")


class ModelSettings(_Frozen):
    """What every sub-model kind is configured by; the settings of a kind with none of its own
    (``bpr``, ``popularity``). The kinds with their own settings subclass it, and
    ``ModelConfig`` picks the class by ``kind``: a setting of another kind is refused by name."""

    kind: ModelKindName = Field(
        "bpr",
        json_schema_extra={"enum": list(MODELS)},
        description="Shard sub-model (recunlearn.models.MODELS): "
        + "; ".join(f"{k}: {m.summary}" for k, m in MODELS.items())
        + ".",
    )
    dim: int = Field(64, ge=1, description="Embedding dimension (the factor models and WMF).")
    lr: float = Field(0.005, gt=0)
    reg: float = Field(1e-4, ge=0, description="L2 on the embeddings touched by a batch.")
    batch_size: int = Field(2048, ge=1)
    max_epochs: int = Field(200, ge=1)
    eval_every: int = Field(5, ge=1, description="Epochs between validation checks.")
    patience: int = Field(4, ge=1, description="Validation checks without improvement before stop.")
    eval_k: int = Field(20, ge=1)
    init_std: float = Field(0.1, gt=0)
    optimizer: Literal["adam", "sparse_adam"] = Field(
        "adam",
        description="BPR-MF's optimiser: adam (every parameter row each step) or sparse_adam "
        "(sparse embedding gradients, SparseAdam: a step costs the rows its batch touches, "
        "not the item table; for large catalogues). The other kinds train with adam.",
    )

    size_classes: tuple[SizeClass, ...] = Field(
        (),
        description="Settings by training size: a fit on n rows takes the ``set`` of the "
        "smallest class with n <= max_train, the settings above otherwise (a kind's defaults "
        "may carry classes of their own, which never override a setting given explicitly; "
        "the fit's stats name the class it used).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_classes(cls, data: Any) -> Any:
        """A kind's default classes never override a setting given explicitly (``--set
        model.ease_lambda=700`` holds for every fit): such a setting is taken out of them
        here, once, so the settings carry their classes as they apply (through JSON to the
        workers too). Classes given explicitly apply as written."""
        if not isinstance(data, dict) or "size_classes" in data:
            return data
        classes = []
        for c in cls.model_fields["size_classes"].default:
            kept = {k: v for k, v in c.set.items() if k not in data}
            if kept:
                classes.append({"max_train": c.max_train, "set": kept})
        return {**data, "size_classes": classes}

    @model_validator(mode="after")
    def _classes_are_this_kinds(self) -> ModelSettings:
        for c in self.size_classes:
            bad = set(c.set) - (set(type(self).model_fields) - {"kind", "size_classes"})
            if bad:
                raise ValueError(
                    f"model.size_classes: {sorted(bad)} are not settings of kind {self.kind}"
                )
        return self

    def size_class(self, n_train: int) -> SizeClass | None:
        """The smallest size class that holds a fit on ``n_train`` rows, if any."""
        fits = [c for c in self.size_classes if n_train <= c.max_train]
        return min(fits, key=lambda c: c.max_train) if fits else None

    def for_rows(self, n_train: int) -> ModelConfig:
        """The settings a fit on ``n_train`` rows uses: its size class applied, else these."""
        c = self.size_class(n_train)
        if c is None:
            return self
        fields = self.model_dump(exclude={"size_classes"})
        return model_settings(**{**fields, **c.set, "size_classes": ()})

    @model_validator(mode="after")
    def _sparse_is_bpr(self) -> ModelSettings:
        if self.optimizer == "sparse_adam" and self.kind != "bpr":
            raise ValueError(f"model.optimizer=sparse_adam is BPR-MF's; model.kind={self.kind}")
        return self

    @model_validator(mode="after")
    def _own_class(self) -> ModelSettings:
        if type(self) is ModelSettings and self.kind in _OWN_SETTINGS:
            raise ValueError(
                f"model.kind={self.kind} has settings of its own: build it with "
                f"model_settings(kind={self.kind!r}, ...) or from a config file"
            )
        return self

    def with_kind(self, kind: str, **update: Any) -> ModelConfig:
        """The settings of another kind: the shared fields kept, this kind's own dropped,
        ``update`` applied (validated like a config file)."""
        shared = self.model_dump(include=set(ModelSettings.model_fields) - {"kind", "size_classes"})
        if kind != "bpr":  # the sparse optimiser is BPR-MF's alone
            shared.pop("optimizer")
        return model_settings(**{**shared, **update, "kind": kind})


class WMFSettings(ModelSettings):
    kind: Literal["wmf"] = "wmf"
    # chosen on validation rows (`recunlearn bench tune --models wmf`, docs/results/tune): on
    # ML-1M (800K rows) alpha 4 / reg 25 (validation NDCG@20 0.2526 against 0.2490 for ML-100K's
    # choice; test 0.3048, implicit ALS 0.3042); on ML-100K (80K rows, two rounds, 43 settings)
    # alpha 8 / reg 50 (0.299 against 0.235 for the earlier 10 / 5; test 0.349 against 0.273)
    wmf_alpha: float = Field(
        4.0, gt=0, description="WMF: confidence 1 + alpha of an observed pair."
    )
    wmf_reg: float = Field(25.0, gt=0, description="WMF: L2 weight.")
    wmf_tol: float = Field(
        1e-3, gt=0, description="WMF: relative residual of converged normal equations."
    )
    # a shard of ML-100K at K = 10 (8K rows) under reg 50 is starved: the K = 10 ensemble fell
    # from 0.320 to 0.254 test NDCG@20. Fits on up to 30K rows take the settings chosen for
    # those shards on the ensemble's validation NDCG (`bench tune --shards 10`, 6 settings):
    # 0.283 (test 0.332) against 0.277 (0.320) for the earlier 10 / 5
    size_classes: tuple[SizeClass, ...] = Field(
        (
            SizeClass(max_train=30000, set={"wmf_alpha": 2.0, "wmf_reg": 5.0}),
            SizeClass(max_train=200000, set={"wmf_alpha": 8.0, "wmf_reg": 50.0}),
        ),
        description=ModelSettings.model_fields["size_classes"].description,
    )


class ItemKNNSettings(ModelSettings):
    kind: Literal["itemknn"] = "itemknn"
    knn_k: int = Field(50, ge=1, description="item-kNN: neighbours kept per item.")
    knn_shrink: float = Field(0.0, ge=0, description="item-kNN: cosine shrinkage.")


class EASESettings(ModelSettings):
    kind: Literal["ease"] = "ease"
    # chosen on validation rows (`bench tune` and `bench quality`'s search, docs/results):
    # the best lambda grows with the training rows. ML-1M (800K rows) chose 800; ML-100K's
    # full model (80K) 400 (test 0.3580 against 0.3562 at the earlier 500); Last.fm (42K) 100;
    # ML-100K's K = 10 ensemble (8K-row shards) 25 (test 0.329 against 0.285 at 500)
    ease_lambda: float = Field(
        800.0, gt=0, description="EASE: L2 weight lambda of (X^T X + lambda I)^-1."
    )
    size_classes: tuple[SizeClass, ...] = Field(
        (
            SizeClass(max_train=30000, set={"ease_lambda": 25.0}),
            SizeClass(max_train=60000, set={"ease_lambda": 100.0}),
            SizeClass(max_train=200000, set={"ease_lambda": 400.0}),
        ),
        description=ModelSettings.model_fields["size_classes"].description,
    )
    ease_max_items: int = Field(
        20000,
        ge=1,
        description="EASE: largest catalogue (two dense float64 I x I matrices, "
        "16 I^2 bytes: 6.4 GB at 20K items).",
    )


class LightGCNSettings(ModelSettings):
    kind: Literal["lightgcn"] = "lightgcn"
    lightgcn_layers: int = Field(3, ge=1, description="LightGCN: propagation layers.")
    lightgcn_batch_size: int = Field(
        8192,
        ge=1,
        description="LightGCN: pairs per step (each step propagates the whole shard graph).",
    )


class NCFSettings(ModelSettings):
    kind: Literal["ncf"] = "ncf"
    ncf_layers: list[int] = Field(
        [32, 16, 8], min_length=1, description="NCF: MLP widths after the input."
    )
    ncf_negatives: int = Field(4, ge=1, description="NCF: sampled negatives per positive.")
    ncf_fold_in: Literal["linear", "adam"] = Field(
        "linear",
        description="NCF: fold in unseen users linearly (GMF vector, MLP at the users' mean) "
        "or by Adam steps on both vectors.",
    )
    ncf_fold_in_steps: int = Field(30, ge=1, description="NCF: Adam steps of an adam fold-in.")


# the kinds with settings of their own; any other registered kind is configured by ModelSettings
_OWN_SETTINGS: dict[str, type[ModelSettings]] = {
    "wmf": WMFSettings,
    "itemknn": ItemKNNSettings,
    "ease": EASESettings,
    "lightgcn": LightGCNSettings,
    "ncf": NCFSettings,
}


def _settings_tag(value: Any) -> str:
    kind = value.get("kind", "bpr") if isinstance(value, dict) else getattr(value, "kind", "bpr")
    return kind if kind in _OWN_SETTINGS else "shared"


# ``model:`` of a config: one settings class per kind, picked by ``kind`` (a discriminated union)
ModelConfig = Annotated[
    Annotated[ModelSettings, Tag("shared")]
    | Annotated[WMFSettings, Tag("wmf")]
    | Annotated[ItemKNNSettings, Tag("itemknn")]
    | Annotated[EASESettings, Tag("ease")]
    | Annotated[LightGCNSettings, Tag("lightgcn")]
    | Annotated[NCFSettings, Tag("ncf")],
    Discriminator(_settings_tag),
]
_MODEL_CONFIG: TypeAdapter[ModelConfig] = TypeAdapter(ModelConfig)


def model_settings(**fields: Any) -> ModelConfig:
    """The settings class of ``fields["kind"]`` (default bpr), validated like a config file."""
    try:
        return _MODEL_CONFIG.validate_python(fields)
    except ValidationError as exc:
        raise ConfigError(f"invalid model settings: {exc}") from exc


class AggregatorConfig(_Frozen):
    kind: Literal["attention", "learned", "mean"] = Field(
        "mean",
        description="How shard scores combine: the mean (no parameters, nothing to refit), "
        "UltraRE-style learned weights (a logistic regression over the shard scores) or "
        "RecEraser-style attention; the last two are refit on retained data after every deletion.",
    )
    fold_in_reg: float = Field(1.0, gt=0, description="Ridge term of the least-squares fold-in.")
    attention_dim: int = Field(32, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(4096, ge=1)
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(2, ge=1)
    holdout: float = Field(
        0.2, gt=0, lt=1, description="Share of training pairs the aggregator learns on."
    )
    learned_l2: float = Field(
        1e-4, ge=0, description="Learned weights: L2 on the standardised weights."
    )
    learned_iterations: int = Field(100, ge=1, description="Learned weights: L-BFGS iterations.")
    max_valid_users: int = Field(2000, ge=10, description="Users sampled for early stopping.")
    valid_cache_mb: int = Field(
        256,
        ge=1,
        description="Memory for the validation users' shard scores (fewer users if over).",
    )


class TrainConfig(_Frozen):
    reference_model: bool = Field(
        True, description="Also train the full model (K=1) as the retrain reference."
    )
    threads_per_task: int = Field(1, ge=1, description="torch threads inside one Ray task.")
    deterministic: bool = Field(True, description="torch deterministic kernels (CPU).")
    mode: Literal["parallel", "sequential"] = Field(
        "parallel",
        description="parallel: one model per shard, trained at once, and an aggregator "
        "(SISA, RecEraser, UltraRE). sequential: LASER, one model trained shard group after group "
        "in a curriculum order with a checkpoint per group; a request retrains from its earliest "
        "group on (sharding.group_epochs epochs at most per group).",
    )


class FastSettings(_Frozen):
    """The fast tier's update of a shard model (``recunlearn.unlearning.fast_bpr``)."""

    negatives: int = Field(2, ge=1, description="Sampled negatives per positive term.")
    damping: float = Field(
        3.0,
        gt=0,
        description="Added to the Gauss-Newton diagonal. Smaller "
        "steps further and, over a stream, costs utility: on ML-100K, 100 "
        "sequential users at 1.0 kept 0.94 of the original's NDCG@20, at 3.0 0.98.",
    )
    cg_iters: int = Field(30, ge=1)
    cg_tol: float = Field(1e-3, gt=0)
    neighbours: int = Field(64, ge=0, description="Collaborative users added to SCIF's block.")
    terms_per_row: int = Field(256, ge=1)
    negative_terms: int = Field(20_000, ge=1)
    max_step: float = Field(1.0, gt=0)
    finetune_steps: int = Field(10, ge=1)
    ascent_steps: int = Field(
        10,
        ge=1,
        description="At most; it stops earlier when the forgotten "
        "pairs' loss reaches that of held-out pairs.",
    )
    lr: float = Field(
        0.001,
        gt=0,
        description="Adam's step in finetune and ascent (the training "
        "rate, 0.005, destroys utility within 100 requests).",
    )
    batch: int = Field(4096, ge=1, description="Terms per step in finetune and ascent.")


class PolicyConfig(_Frozen):
    """When answered-fast requests get their exact shard retrain (whichever comes first)."""

    max_pending: int = Field(100, ge=1, description="Requests with an approximate guarantee.")
    deadline_hours: float = Field(24.0, gt=0, description="Age of the oldest approximate request.")
    max_share: float = Field(
        0.02,
        gt=0,
        le=1,
        description="Share of a shard's training rows "
        "removed by fast updates since it was last trained (drift).",
    )


class UnlearnConfig(_Frozen):
    request_deadline_days: float = Field(
        30.0,
        gt=0,
        description="A request must be answered within this many days of its receipt "
        "(GDPR art. 12(3): without undue delay, within one month). recunlearn status reports each "
        "open request's age against it; status --overdue exits 4 when any is past it.",
    )
    lock_ttl_hours: float = Field(
        12.0,
        gt=0,
        description="Lease of the tables' job lock (ingest, partition, train, unlearn run "
        "one at a time): a holder killed on another host frees it after this long; on the same "
        "host at once.",
    )
    method: MethodName = Field(
        "exact",
        json_schema_extra={"enum": list(METHODS)},
        description="Unlearning method (recunlearn.unlearning.methods.METHODS): "
        + "; ".join(f"{k}: {m.summary}" for k, m in METHODS.items())
        + ". An approximate method "
        "publishes at once and the exact retrain follows when unlearn.policy says so.",
    )
    fast: FastSettings = FastSettings()
    policy: PolicyConfig = PolicyConfig()
    retrain_reference: bool = Field(
        True,
        description="Retrain the full reference model without the forgotten data (benchmarks).",
    )
    vacuum: bool = Field(True, description="VACUUM with zero retention after the delete.")
    partition: Literal["frozen", "strict"] = Field(
        "frozen",
        description="frozen: keep the partition, which was fit with the forgotten data "
        "present, and retrain the shards that held it. strict: recompute the partition from the "
        "retained data (as a fresh run would) and also retrain every shard whose members changed "
        "(exact sharding methods only).",
    )
    membership: bool = Field(
        True,
        description="Record membership-inference evidence per request: a black-box attack "
        "(recunlearn.evidence.mia) on a shadow model of retained users scores each forgotten user "
        "under the "
        "original and the unlearned model, while their rows are still in memory.",
    )
    shadow_users: int = Field(
        1000,
        ge=20,
        description="Retained users sampled for the attack's shadow model (half train "
        "it, half are its non-members).",
    )


class AttributeEditConfig(_Frozen):
    """Post-training attribute unlearning (see ``recunlearn.attribute.edit``)."""

    space: Literal["function", "parameter"] = Field(
        "function",
        description="Regularise the edit in function space (keep each user's ranking) "
        "or parameter space (keep the vectors close).",
    )
    w_dist: float = Field(1.0, ge=0, description="Weight of the anchor MMD (distribution loss).")
    w_u2u: float = Field(
        0.0,
        ge=0,
        description="Weight of the user-to-user loss. Off by default: in function space it "
        "fights the regulariser and leaves more signal (see the attribute benchmark).",
    )
    w_adv: float = Field(0.1, ge=0, description="Weight of the online attacker's confusion loss.")
    w_reg: float = Field(0.5, ge=0, description="Weight of the regulariser.")
    steps: int = Field(700, ge=1)
    lr: float = Field(0.01, gt=0)
    batch: int = Field(
        512, ge=8, description="Edited users per class (MMD) and per step (regulariser)."
    )
    pool_sample: int = Field(1024, ge=8, description="Anchor users drawn per step.")
    temperature: float = Field(
        1.0, gt=0, description="Softmax temperature of the function-space KL."
    )
    bandwidths: tuple[float, ...] = Field(
        (0.5, 1.0, 2.0), description="Gaussian kernel widths, as multiples of the median distance."
    )


class AttributeConfig(_Frozen):
    users_file: str | None = Field(
        None, description="The user attribute file (u.user / users.dat); None: beside the raw log."
    )
    edit: AttributeEditConfig = AttributeEditConfig()


class _EngineStart(_Frozen):
    start_attempts: int = Field(
        3,
        ge=1,
        description="Tries to start (or connect to) the engine before the job gives up "
        "with one EngineStartError naming the engine and what to check.",
    )
    start_backoff_s: float = Field(
        5.0, ge=0, description="Wait before the second try, doubled before each later one."
    )


class SparkConfig(_EngineStart):
    master: str = Field("local[2]", description="Ignored when spark-submit already set one.")
    app_name: str = "recunlearn"
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "4g"
    extra: dict[str, str] = Field(default_factory=dict, description="More spark.* settings.")


class RayConfig(_EngineStart):
    address: str | None = Field(
        None, description="Ray cluster address; None starts a local instance (RAY_ADDRESS wins)."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local instance (None: all).")
    include_dashboard: bool = False
    max_retries: int = Field(2, ge=0, description="Retries of a shard task whose worker died.")
    object_store_mb: int | None = Field(
        None, ge=80, description="Object store of a local instance in MiB (None: Ray's default)."
    )
    worker_niceness: int = Field(
        0,
        ge=0,
        le=19,
        description="Nice level of a local instance's workers. Ray's default, 15, "
        "starves shard training beside a Spark JVM at nice 0 on a busy host; 0 shares the CPUs "
        "evenly. A cluster's head sets its own (RAY_worker_niceness when it is started).",
    )


class RunConfig(_Frozen):
    data_dir: str = Field("var", description="Root of tables, checkpoints, models and reports.")
    seed: int = Field(2026, description="Root seed; every component derives its own.")
    dataset: DatasetConfig = DatasetConfig()
    split: SplitConfig = SplitConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    pseudonym: PseudonymConfig = PseudonymConfig()
    sharding: ShardingConfig = ShardingConfig()
    model: ModelConfig = ModelSettings()
    aggregator: AggregatorConfig = AggregatorConfig()
    train: TrainConfig = TrainConfig()
    unlearn: UnlearnConfig = UnlearnConfig()
    attribute: AttributeConfig = AttributeConfig()
    spark: SparkConfig = SparkConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _model_fits(self) -> RunConfig:
        if self.model.kind not in FACTOR_MODELS and self.aggregator.kind != "mean":
            raise ValueError(
                f"aggregator.kind={self.aggregator.kind} is fit over the shards' user "
                f"vectors (model.kind {' or '.join(FACTOR_MODELS)}); "
                f"model.kind={self.model.kind} needs aggregator.kind=mean"
            )
        if self.unlearn.partition == "strict" and self.sharding.unit != "user":
            raise ValueError(
                "unlearn.partition=strict recomputes user shards; "
                f"sharding.unit={self.sharding.unit} needs unlearn.partition=frozen"
            )
        if self.train.mode == "sequential":
            clash = [
                f"{k}={v}"
                for k, v in (
                    ("aggregator.kind", self.aggregator.kind),
                    ("sharding.unit", self.sharding.unit),
                    ("unlearn.partition", self.unlearn.partition),
                    ("unlearn.method", self.unlearn.method),
                )
                if v not in ("mean", "user", "frozen", "exact")
            ]
            if clash:
                raise ValueError(
                    "train.mode=sequential serves one model, restarted from a user "
                    "group's checkpoint: it needs aggregator.kind=mean, sharding.unit=user, "
                    f"unlearn.partition=frozen and unlearn.method=exact, not {', '.join(clash)}"
                )
        check_model(METHODS[self.unlearn.method], self.model.kind)
        return self

    def resolved_data_dir(self, base: Path | None = None) -> Path:
        raw = os.environ.get(DATA_DIR_ENV) or self.data_dir
        p = Path(raw).expanduser()
        if not p.is_absolute():
            p = (base or Path.cwd()) / p
        return p.resolve()


class SuiteBlock(_Frozen):
    """One product of the benchmark matrix: every combination of its lists is a cell."""

    datasets: list[str] = Field(..., min_length=1, description="Names under RECUNLEARN_DATA_DIR.")
    models: list[Literal["bpr"]] = Field(["bpr"], min_length=1, description="Sub-models.")
    methods: list[Literal["none", "full", "sisa", "ot-mean", "ot-attention"]] = Field(
        ..., min_length=1, description="Unlearning methods (pipelines/bench/methods.py)."
    )
    n_shards: list[int] = Field([10], min_length=1, description="K of the sharded methods.")
    kinds: list[Literal["random", "core", "edge", "interactions", "items"]] = Field(
        ["random", "core", "edge"],
        min_length=1,
        description="Forget sets: whole users drawn random, "
        "most active (core) or least active (edge); random training interactions; random items.",
    )
    sizes: list[float] = Field(
        [0.05],
        min_length=1,
        description="Forget-set sizes: a share (of the target users, training "
        "interactions or items) if < 1, else a count.",
    )


class MiaConfig(_Frozen):
    shadow_share: float = Field(
        0.3,
        gt=0,
        lt=0.6,
        description="Users held by the attacker (half "
        "train its shadow recommender, half are its non-members).",
    )
    nonmember_share: float = Field(
        0.1, gt=0, lt=0.4, description="Never-seen users (target non-members)."
    )
    dim: int = Field(32, ge=2, description="Rank of the attacker's item factorisation.")
    n_rec: int = Field(100, ge=1, description="Recommendations the attacker sees per user.")
    bootstrap: int = Field(200, ge=0)


class SuiteConfig(_Frozen):
    """``recunlearn bench suite``: a declared matrix of cells, one JSON per cell."""

    seed: int = 2026
    matrix: list[SuiteBlock] = Field(..., min_length=1)
    mia: MiaConfig = MiaConfig()
    parametric_seeds: int = Field(
        1, ge=0, description="Retrains with other seeds per forget set, for the parametric spread."
    )
    k: int = Field(20, ge=1, description="Cut-off of every ranking metric.")
    top_share: float = Field(0.05, gt=0, lt=1, description="Share of most active users in A-IGF.")


def load_suite_config(path: str | Path) -> SuiteConfig:
    try:
        return SuiteConfig.model_validate(_read_yaml(Path(path)))
    except ValidationError as exc:
        raise ConfigError(f"invalid suite configuration ({path}): {exc}") from exc


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (with ``extends: other.yaml``) and apply ``a.b=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(value))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration ({path}): {exc}") from exc


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent:
        data = _deep_merge(_read_yaml(path.parent / parent), data)
    return data
