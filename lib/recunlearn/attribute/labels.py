"""User attributes from a data set's user file, encoded as class labels.

Supported files: MovieLens 100K ``u.user`` (``id|age|gender|occupation|zip``), MovieLens 1M
``users.dat`` (``id::gender::age::occupation::zip``, where age is a group code) and LFM-2B's
``users.tsv`` (tab-separated with a header: ``user_id``, ``country``, ``age``, ``gender``,
``creation_time``; gender ``m``/``f``, or ``n`` or empty when not given, age -1 or empty when
not given; ``.bz2``/``.gz`` or a folder of part files, as ``recunlearn data synth`` writes it).
Age is bucketed into the same three groups for all, close to balanced on ML-1M: under 25,
25-34, 35 and over. A user whose value is not given has no label for that attribute (-1).
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


LFM_USERS = ("users.tsv", "users.tsv.bz2", "users.tsv.gz")


def find_user_file(folder: Path) -> Path:
    for name in ("u.user", "users.dat", *LFM_USERS):
        if (folder / name).exists():
            return folder / name
    raise DataError(f"no user attribute file (u.user, users.dat or users.tsv) in {folder}")


def read_lfm_users(path: Path) -> pd.DataFrame:
    """LFM-2B's users file (see the module's note) as ``read_user_attributes`` gives it."""
    parts = sorted(path.glob("part-*")) if path.is_dir() else [path]
    if not parts:
        raise DataError(f"{path}: no part files")
    try:
        df = pd.concat(
            [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False) for p in parts],
            ignore_index=True,
        )
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a tab-separated users file ({exc})") from None
    missing = sorted({"user_id", "age", "gender"} - set(df.columns))
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; it has {list(df.columns)}")
    out = pd.DataFrame({"raw_user": df["user_id"].str.strip()})
    gender = df["gender"].str.strip().str.upper()
    bad = ~gender.isin(["M", "F", "N", ""])
    age = pd.to_numeric(df["age"].str.strip().replace("", "-1"), errors="coerce")
    bad |= age.isna()
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} row(s) with a gender outside m/f/n or a bad age")
    out["gender"] = gender.where(gender.isin(["M", "F"]), None)
    out["age"] = age.where(age >= 0)
    return out


def read_user_attributes(path: Path) -> pd.DataFrame:
    """Columns ``raw_user`` (str), ``gender`` ('M'/'F', None where not given), ``age`` (years
    or ML-1M group code, NaN where not given)."""
    path = Path(path)
    if path.is_dir() and not path.name.startswith("users.tsv"):
        path = find_user_file(path)
    if path.name.startswith("users.tsv"):
        df = read_lfm_users(path)
        if df["raw_user"].duplicated().any():
            raise DataError(f"{path}: duplicate user ids")
        return df
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
        g = df["gender"].to_numpy()
        return np.where(g == "F", 1, np.where(g == "M", 0, -1)).astype(np.int64)
    age = df["age"].to_numpy(dtype=float)
    return np.where(np.isnan(age), -1, np.digitize(age, AGE_EDGES)).astype(np.int64)


def labels_for_keys(df: pd.DataFrame, name: str, keys: np.ndarray, key_of) -> np.ndarray:  # noqa: ANN001
    """Labels aligned with pseudonymous ``keys`` (-1 where the user file lacks the user);
    ``key_of`` maps a raw id to its key."""
    lab = encode(df, name)
    table = {key_of(r): int(v) for r, v in zip(df["raw_user"], lab, strict=True)}
    return np.array([table.get(k, -1) for k in np.asarray(keys).astype(str)], dtype=np.int64)
