"""Typed records of what a job trains and publishes.

- :class:`CheckpointMeta`: the sidecar of one trained component (a shard, the reference, the
  aggregator, an attribute overlay): which table version it consumed, its config fingerprint,
  seed and timings. The audit proves from it which data a checkpoint was trained on without
  loading the checkpoint.
- :class:`Component`: a component as a model version uses it (a checkpoint and the fields the
  jobs and the audit read).
- :class:`ModelVersion`: the manifest of one published version. Its JSON form stores paths
  relative to the data directory, so a data directory can be moved or copied whole.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recunlearn.storage.layout import now_utc

# the fields a model version keeps of a component's checkpoint metadata
COMPONENT_FIELDS = (
    "path",
    "sha256",
    "delta_version",
    "run_id",
    "fit_seconds",
    "n_users",
    "n_train",
    "config_fingerprint",
    "seed",
    "valid_ndcg",
    "epochs",
    "kind",
)


def _now() -> str:
    return now_utc().isoformat()


def relative_to(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies under it (else as given)."""
    p = Path(path)
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def resolve(path: str, root: Path) -> str:
    """A stored path: relative ones are under ``root``; absolute ones (written before paths
    were relative) stay as they are."""
    p = Path(path)
    return str(p if p.is_absolute() else root / p)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint was trained on. ``extra`` holds a component's own facts (a training
    curve, a sequential stage, an approximate update's method, an overlay's edits)."""

    shard_id: int | None  # None: trained on every shard (reference, aggregator, overlay)
    delta_version: int  # the interactions table version whose rows it was trained on
    job_id: str
    config_fingerprint: str | None = None
    seed: int | None = None
    table: str = "interactions"
    created_at: str = field(default_factory=_now)
    fit_seconds: float = 0.0
    epochs: int = 0
    valid_ndcg: float | None = None
    n_users: int | None = None
    n_train: int | None = None
    kind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        clash = set(out) & set(self.extra)
        if clash:
            raise ValueError(
                f"checkpoint meta: extra fields {sorted(clash)} shadow the record's own"
            )
        return {**out, **self.extra}


@dataclass(frozen=True)
class Component:
    """A checkpoint as a model version serves it (``path`` absolute in memory)."""

    path: str
    sha256: str | None = None
    delta_version: int | None = None
    run_id: str | None = None
    fit_seconds: float | None = None
    n_users: int | None = None
    n_train: int | None = None
    config_fingerprint: str | None = None
    seed: int | None = None
    valid_ndcg: float | None = None
    epochs: int | None = None
    kind: str | None = None  # the aggregator's kind
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. an overlay's edits and users

    @classmethod
    def of(cls, meta: dict[str, Any], **extra: Any) -> Component:
        """The entry for a saved checkpoint's metadata (``checkpoints.save``'s answer)."""
        fields: dict[str, Any] = {f: meta.get(f) for f in COMPONENT_FIELDS}
        return cls(**fields, extra=dict(extra))

    def to_json(self, root: Path) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in COMPONENT_FIELDS}
        out["path"] = relative_to(self.path, root)
        if self.kind is None:
            out.pop("kind")
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path) -> Component:
        known: dict[str, Any] = {f: data.get(f) for f in COMPONENT_FIELDS}
        known["path"] = resolve(data["path"], root)
        return cls(**known, extra={k: v for k, v in data.items() if k not in COMPONENT_FIELDS})


@dataclass(frozen=True)
class ModelVersion:
    """One published model version: the shards, the aggregator that combines them, the full
    reference model (when trained), and what the version guarantees about forgotten data."""

    version: int
    n_shards: int
    n_items: int
    table_version: int  # the interactions version every component was trained on (or updated to)
    shards: dict[int, Component]
    aggregator: Component
    reference: Component | None
    guarantee: str
    config_fingerprint: str
    created_at: str = field(default_factory=_now)
    partition: dict[str, Any] | None = None
    # sequential training (LASER): the curriculum order of the groups; the shards are the
    # stages' checkpoints filed under their group, and the last group's serves
    order: list[int] | None = None
    parent: int | None = None
    job_id: str | None = None  # the job that published it (other than a first training)
    attribute_overlay: Component | None = None
    # set while an approximate update awaits its exact retrain: shards, requests, rows removed
    # per shard, since, method
    pending_exact: dict[str, Any] | None = None
    # what the ingest of the data did (its k-core filter and row count), from its commit
    ingest: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if sorted(self.shards) != list(range(self.n_shards)):
            raise ValueError(
                f"model version {self.version}: shards {sorted(self.shards)} do not "
                f"cover 0..{self.n_shards - 1}"
            )

    @property
    def sequential(self) -> bool:
        return self.order is not None

    def serving_shards(self) -> list[int]:
        """The shards whose models serve: all of them, or the last stage of a sequential run."""
        return [self.order[-1]] if self.order else list(range(self.n_shards))

    def groups_from(self, touched: list[int]) -> list[int]:
        """Sequential training: the groups retrained for ``touched``, every group from the
        earliest touched one on, in curriculum order."""
        order = list(self.order or [])
        return order[min(order.index(k) for k in touched) :] if touched else []

    def paths(self) -> set[str]:
        """Every checkpoint this version uses."""
        out = {c.path for c in self.shards.values()} | {self.aggregator.path}
        out |= {c.path for c in (self.reference, self.attribute_overlay) if c is not None}
        return out

    def replace(self, **changes: Any) -> ModelVersion:
        return dataclasses.replace(self, **changes)

    def to_json(self, root: Path) -> dict[str, Any]:
        def comp(c: Component | None) -> dict[str, Any] | None:
            return c.to_json(root) if c is not None else None

        return {
            "version": self.version,
            "created_at": self.created_at,
            "config_fingerprint": self.config_fingerprint,
            "table_version": self.table_version,
            "n_items": self.n_items,
            "n_shards": self.n_shards,
            "shards": {str(k): comp(self.shards[k]) for k in sorted(self.shards)},
            "aggregator": comp(self.aggregator),
            "reference": comp(self.reference),
            "partition": self.partition,
            "ingest": self.ingest,
            "guarantee": self.guarantee,
            "sequential": {"order": list(self.order)} if self.order is not None else None,
            "parent": self.parent,
            "job_id": self.job_id,
            "attribute_overlay": comp(self.attribute_overlay),
            "pending_exact": self.pending_exact,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path) -> ModelVersion:
        def comp(d: dict[str, Any] | None) -> Component | None:
            return Component.from_json(d, root) if d else None

        aggregator = comp(data["aggregator"])
        assert aggregator is not None
        return cls(
            version=int(data["version"]),
            n_shards=int(data["n_shards"]),
            n_items=int(data["n_items"]),
            table_version=int(data["table_version"]),
            shards={int(k): Component.from_json(v, root) for k, v in data["shards"].items()},
            aggregator=aggregator,
            reference=comp(data.get("reference")),
            guarantee=data.get("guarantee") or "",
            config_fingerprint=data.get("config_fingerprint") or "",
            created_at=data.get("created_at") or _now(),
            partition=data.get("partition"),
            ingest=data.get("ingest"),
            order=list((data.get("sequential") or {}).get("order") or []) or None,
            parent=data.get("parent"),
            job_id=data.get("job_id") or data.get("unlearn_job") or data.get("attribute_job"),
            attribute_overlay=comp(data.get("attribute_overlay")),
            pending_exact=data.get("pending_exact"),
        )
