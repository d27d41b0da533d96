"""Checkpoints: a torch file per trained component plus a JSON sidecar of metadata.

The sidecar (a :class:`recunlearn.storage.versions.CheckpointMeta`: shard, Delta version consumed,
config fingerprint, seed, timings) lets the audit prove which data a checkpoint was trained on
without loading it. The sidecar names its checkpoint relative to the checkpoint root, so the data
directory can move; in memory ``path`` is always where the file is now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recunlearn.hashing import sha256_file
from recunlearn.storage.versions import CheckpointMeta


def component_dir(root: Path, component: str) -> Path:
    """``shard-007``, ``reference`` or ``aggregator`` under the checkpoint root."""
    return root / component


def shard_component(shard_id: int) -> str:
    return f"shard-{shard_id:03d}"


def save(
    root: Path, component: str, run_id: str, state: dict[str, Any], meta: CheckpointMeta
) -> dict[str, Any]:
    """Write ``state`` and its sidecar atomically; returns the sidecar's fields with the
    checkpoint's absolute ``path``."""
    folder = component_dir(root, component)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.pt"
    tmp = path.with_suffix(".pt.tmp")
    import torch  # here: reading versions and metadata (recunlearn status) needs no torch

    torch.save(state, tmp)
    tmp.replace(path)
    record = {
        **meta.to_json(),
        "component": component,
        "run_id": run_id,
        "path": path.relative_to(root).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }
    side = path.with_suffix(".json")
    side.with_suffix(".json.tmp").write_text(json.dumps(record, indent=2, sort_keys=True))
    side.with_suffix(".json.tmp").replace(side)
    return {**record, "path": str(path)}


def load_state(path: str | Path) -> dict[str, Any]:
    import torch

    return torch.load(path, weights_only=True)


def all_metas(root: Path) -> list[dict[str, Any]]:
    """Metadata of every checkpoint on disk (also ones no model version references)."""
    out = []
    for side in sorted(root.glob("*/*.json")):
        meta = json.loads(side.read_text())
        meta["path"] = str(side.with_suffix(".pt"))  # where it is now (the sidecar's own name)
        meta["exists"] = Path(meta["path"]).exists()
        out.append(meta)
    return out


def delete(meta: dict[str, Any]) -> None:
    Path(meta["path"]).unlink(missing_ok=True)
    Path(meta["path"]).with_suffix(".json").unlink(missing_ok=True)
