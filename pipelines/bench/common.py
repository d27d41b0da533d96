"""What every benchmark shares: data sets as arrays with the seeded split, output files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recunlearn.data.interactions import InteractionData
from recunlearn.data.pseudonym import user_key
from recunlearn.data.split import split_pairs
from recunlearn.errors import DataError

OLD_SPLIT = "per-user floor, before the shared split rule (figures not rerun since)"

BENCH_SECRET = b"recunlearn-bench-pseudonyms"  # benchmarks key users too; outputs are aggregates


def dataset_dir(name: str, data_dir: str | None = None) -> Path:
    root = data_dir or os.environ.get("RECUNLEARN_DATA_DIR")
    if not root or not (Path(root) / name).is_dir():
        raise DataError(
            f"data set {name!r} not found: set RECUNLEARN_DATA_DIR (or --data-dir) to "
            "a folder holding it, e.g. ../shared/datasets"
        )
    return Path(root) / name


def load_pairs(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw user ids and item ids of a data set's interactions."""
    if name == "movielens-1m":
        df = pd.read_csv(folder / "interactions.csv", dtype=str)
        return df["user_id"].to_numpy(), df["movie_id"].to_numpy()
    if name == "movielens-100k":
        df = pd.read_csv(folder / "u.data", sep="\t", header=None, dtype=str)
        return df[0].to_numpy(), df[1].to_numpy()
    if name == "amazon-digital-music":
        df = pd.read_csv(folder / "interactions.csv", dtype=str)
        return df["user_id"].to_numpy(), df["item_id"].to_numpy()
    if name == "lastfm-hetrec-2k":  # play counts: every (user, artist) listened to is a pair
        df = pd.read_csv(folder / "user_artists.dat", sep="\t", dtype=str)
        return df["userID"].to_numpy(), df["artistID"].to_numpy()
    raise DataError(f"benchmark data set {name!r} is not supported here")


def load_split(
    name: str, folder: Path, *, seed: int, valid: float = 0.1, test: float = 0.1
) -> tuple[InteractionData, dict[str, str]]:
    """The data set as an InteractionData with the seeded per-user split, keyed by
    pseudonymous keys; also the key of every raw id (in memory only)."""
    users, items = load_pairs(name, folder)
    uniq = np.unique(users)
    keys_of = {u: user_key(BENCH_SECRET, u) for u in uniq}
    keys = np.array([keys_of[u] for u in uniq])[np.searchsorted(uniq, users)]
    item_ids, item_idx = np.unique(items, return_inverse=True)
    split = split_pairs(keys, item_idx, valid=valid, test=test, seed=seed)
    return InteractionData.from_columns(keys, item_idx, split, len(item_ids)), keys_of


def write_outputs(
    out_dir: Path, stem: str, result: dict[str, Any], markdown: str
) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(result, indent=2, sort_keys=True, default=float))
    paths["markdown"].write_text(markdown)
    return {k: str(v) for k, v in paths.items()}
