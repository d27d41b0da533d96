"""Content hashes: of files (checkpoints, downloaded data sets) and of configs (the fingerprint
stored beside every checkpoint and report, so a result traces to its exact settings)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(cfg: Any) -> str:
    """sha256 of the canonical JSON of a config (a pydantic model, or a plain dict), 16 hex
    chars."""
    payload = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
