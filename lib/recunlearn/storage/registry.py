"""Published model versions: the registry table, and :func:`publish_version`, the one way a
job publishes a version (publish, prune the checkpoints it no longer needs, retire the
versions it supersedes)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from recunlearn import faults
from recunlearn.storage import checkpoints
from recunlearn.storage.delta import append_rows, create_table, merge_into, read_rows, with_retries
from recunlearn.storage.layout import Layout, now_utc
from recunlearn.storage.versions import ModelVersion, relative_to, resolve

log = logging.getLogger(__name__)

REGISTRY_SCHEMA = (
    "version long, created_at timestamp, status string, manifest string, parent long, "
    "request_ids array<string>, note string"
)
PUBLISHED, RETIRED = "published", "retired"


class ModelRegistry:
    """The registry table of model versions (delta-rs; no engine). A version row is written
    only after every step of its job succeeded; the manifest it names is written first."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.model_versions
        self._ready = False

    def ensure(self) -> None:
        if not self._ready:
            create_table(self.path, REGISTRY_SCHEMA, stats_columns=["version", "status"])
        self._ready = True

    def versions(self) -> list[dict[str, Any]]:
        self.ensure()
        return sorted(read_rows(self.path), key=lambda v: v["version"])

    def current(self) -> dict[str, Any] | None:
        """The registry row of the version in service (the newest published one)."""
        live = [v for v in self.versions() if v["status"] == PUBLISHED]
        return live[-1] if live else None

    def load(self, row: dict[str, Any]) -> ModelVersion:
        """The model version a registry row names."""
        path = resolve(row["manifest"], self.layout.root)
        with open(path) as f:
            return ModelVersion.from_json(json.load(f), self.layout.root)

    def current_version(self) -> ModelVersion | None:
        cur = self.current()
        return self.load(cur) if cur else None

    def next_version(self) -> int:
        vs = self.versions()
        return (max(v["version"] for v in vs) + 1) if vs else 1

    def publish(self, version: ModelVersion, *, request_ids: list[str], note: str) -> None:
        """Write the manifest atomically, then record the version as published (one append)."""
        folder = self.layout.models / f"v{version.version:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp, final = folder / "manifest.json.tmp", folder / "manifest.json"
        tmp.write_text(json.dumps(version.to_json(self.layout.root), indent=2, sort_keys=True))
        tmp.replace(final)
        self.ensure()
        row = {
            "version": version.version,
            "created_at": now_utc(),
            "status": PUBLISHED,
            "manifest": relative_to(final, self.layout.root),
            "parent": version.parent,
            "request_ids": request_ids,
            "note": note,
        }
        append_rows(self.path, [row], what="publish model version")

    def retire(self, versions: list[int], note: str) -> None:
        if not versions:
            return
        self.ensure()
        rows = [{"version": int(v), "note": note} for v in versions]
        with_retries(
            lambda: (
                merge_into(self.path, rows, "t.version = s.version")
                .when_matched_update(updates={"status": f"'{RETIRED}'", "note": "s.note"})
                .execute()
            ),
            what="retire model versions",
        )


@dataclass
class Published:
    """What :func:`publish_version` did."""

    published_at: datetime
    removed: list[str]  # checkpoints deleted: "<component>/<run id>", "(orphan)" if never served
    retired: list[int]


def trained_on(touched: list[int], delete_version: int) -> Callable[[dict[str, Any]], str | None]:
    """The prune rule after a delete: a checkpoint of a touched shard, or of a component trained
    on every shard (reference, aggregator), held the forgotten rows (or is an orphan of an
    earlier failed attempt) and goes. Returns the label it is removed under, or None to keep."""

    def rule(meta: dict[str, Any]) -> str | None:
        if meta.get("shard_id") is not None and meta["shard_id"] not in touched:
            return None
        orphan = "" if meta["delta_version"] < delete_version else " (orphan)"
        return f"{meta['component']}/{meta['run_id']}{orphan}"

    return rule


def publish_version(
    registry: ModelRegistry,
    version: ModelVersion,
    *,
    request_ids: list[str],
    note: str,
    prune: Callable[[dict[str, Any]], str | None] | None = None,
    retire: str | None = None,
) -> Published:
    """Publish ``version``; then delete each checkpoint on disk it does not use that ``prune``
    names (``trained_on`` after a delete); then, with ``retire`` (the note), retire every
    older published version."""
    registry.publish(version, request_ids=request_ids, note=note)
    published_at = now_utc()
    faults.at("prune")  # the crash harness's kill point: published, nothing pruned or retired yet
    removed: list[str] = []
    if prune is not None:
        keep = version.paths()
        for meta in checkpoints.all_metas(registry.layout.checkpoints):
            label = prune(meta) if meta["path"] not in keep else None
            if label is not None:
                checkpoints.delete(meta)
                removed.append(label)
    retired: list[int] = []
    if retire is not None:
        retired = [
            v["version"]
            for v in registry.versions()
            if v["status"] == PUBLISHED and v["version"] < version.version
        ]
        registry.retire(retired, note=retire)
    log.info(
        "published v%d (%s); %d checkpoint(s) removed, %d version(s) retired",
        version.version,
        note,
        len(removed),
        len(retired),
    )
    return Published(published_at, removed, retired)
