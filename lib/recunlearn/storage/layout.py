"""Where everything lives under ``data_dir``, and the ids and clocks the jobs stamp with."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Paths under one data directory."""

    root: Path

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str) -> str:
        return str(self.tables / name)

    @property
    def interactions(self) -> str:
        return self.table("interactions")

    @property
    def items(self) -> str:
        return self.table("items")

    @property
    def shard_map(self) -> str:
        return self.table("shard_map")

    @property
    def ledger(self) -> str:
        return self.table("forget_requests")

    @property
    def audit(self) -> str:
        return self.table("audit")

    @property
    def quarantine(self) -> str:
        """Malformed input rows, by reason and keyed fingerprint (never their content)."""
        return self.table("quarantine")

    @property
    def model_versions(self) -> str:
        return self.table("model_versions")

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def scratch(self) -> Path:
        """Per-job temporary files (Ray spill, exports); removed when the job ends."""
        return self.root / "scratch"


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def new_job_id(kind: str) -> str:
    """A job run's id: its kind, start time and a random suffix."""
    return f"{kind}-{now_utc().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"
