"""User attributes from a data set's user file, encoded as class labels.

Supported files: MovieLens 100K ``u.user`` (``id|age|gender|occupation|zip``) and MovieLens 1M
``users.dat`` (``id::gender::age::occupation::zip``, where age is a group code). Age is
bucketed into the same three groups for both, close to balanced on ML-1M:
under 25, 25-34, 35 and over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recunlearn.errors import DataError

AGE_EDGES = (25, 35)


@dataclass(frozen=True)
class Attribute:
    name: str
    classes: tuple[str, ...]


ATTRIBUTES = {
    "gender": Attribute("gender", ("M", "F")),
    "age": Attribute("age", ("<25", "25-34", "35+")),
}


def attribute(name: str) -> Attribute:
    if name not in ATTRIBUTES:
        raise DataError(f"unknown attribute {name!r}; known: {sorted(ATTRIBUTES)}")
    return ATTRIBUTES[name]


def find_user_file(folder: Path) -> Path:
    for name in ("u.user", "users.dat"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"no user attribute file (u.user or users.dat) in {folder}")


def read_user_attributes(path: Path) -> pd.DataFrame:
    """Columns ``raw_user`` (str), ``gender`` ('M'/'F'), ``age`` (years or ML-1M group code)."""
    path = Path(path)
    if path.is_dir():
        path = find_user_file(path)
    sep, cols = (
        ("|", ["raw_user", "age", "gender", "occupation", "zip"])
        if path.name == "u.user"
        else ("::", ["raw_user", "gender", "age", "occupation", "zip"])
    )
    lines = path.read_text(encoding="latin-1").splitlines()
    parts = [ln.split(sep) for ln in lines if ln.strip()]
    bad = [i for i, p in enumerate(parts) if len(p) != 5]
    if bad:
        raise DataError(f"{path}: {len(bad)} row(s) without 5 fields (first at line {bad[0] + 1})")
    df = pd.DataFrame(parts, columns=cols)[["raw_user", "gender", "age"]]
    df["raw_user"] = df["raw_user"].str.strip()
    df["gender"] = df["gender"].str.strip().str.upper()
    df["age"] = pd.to_numeric(df["age"], errors="coerce")
    invalid = ~df["gender"].isin(["M", "F"]) | df["age"].isna()
    if invalid.any():
        raise DataError(
            f"{path}: {int(invalid.sum())} row(s) with a gender outside M/F or a non-numeric age"
        )
    if df["raw_user"].duplicated().any():
        raise DataError(f"{path}: duplicate user ids")
    return df


def encode(df: pd.DataFrame, name: str) -> np.ndarray:
    """Class index per row of ``df`` for attribute ``name`` (see :data:`ATTRIBUTES`)."""
    attribute(name)
    if name == "gender":
        return (df["gender"].to_numpy() == "F").astype(np.int64)
    return np.digitize(df["age"].to_numpy(dtype=float), AGE_EDGES).astype(np.int64)


def labels_for_keys(df: pd.DataFrame, name: str, keys: np.ndarray, key_of) -> np.ndarray:  # noqa: ANN001
    """Labels aligned with pseudonymous ``keys`` (-1 where the user file lacks the user);
    ``key_of`` maps a raw id to its key."""
    lab = encode(df, name)
    table = {key_of(r): int(v) for r, v in zip(df["raw_user"], lab, strict=True)}
    return np.array([table.get(k, -1) for k in np.asarray(keys).astype(str)], dtype=np.int64)
