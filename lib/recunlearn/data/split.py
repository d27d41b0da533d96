"""The per-user hold-out: one rule, applied by the ingest job to Spark columns and by the
benchmarks to numpy arrays.

Each user's rows are put in a seeded random order; the last ones go to test, the ones
before them to validation, the rest to training. A user's test count is ``n * test``
rounded up or down at random (up with the probability of its fractional part, decided by a
per-user coin in [0, 1)), and the same for validation, so the shares hold in expectation on
logs of short histories too, where a plain floor gives most users no held-out row at all. A
user with at least ``MIN_EVAL_ROWS`` rows gets at least one validation and one test row and
keeps at least one training row; a user with fewer rows trains on all of them.

The rule is written once (:func:`split_labels`) over a small set of element-wise operations,
:data:`NUMPY_OPS` or :func:`spark_ops`; where the order and the coins come from is the
caller's: the ingest job hashes the raw ids with the seed inside Spark, the benchmarks draw
them from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MIN_EVAL_ROWS = 3  # a user with at least this many rows gets a validation and a test row

TRAIN, VALID, TEST = "train", "valid", "test"

# named in benchmark results, so figures from an earlier rule (a plain floor, no minimum
# held-out row) are told apart from this one's
SPLIT_RULE = "per-user, randomised rounding, a held-out row from 3 rows"


@dataclass(frozen=True)
class Ops:
    """The element-wise operations the rule needs, for one array kind."""

    floor: Callable[[Any], Any]
    maximum: Callable[[Any, Any], Any]
    minimum: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]


NUMPY_OPS = Ops(floor=np.floor, maximum=np.maximum, minimum=np.minimum, where=np.where)


def spark_ops() -> Ops:
    """The rule's operations on Spark columns (pyspark is imported only here)."""
    from pyspark.sql import functions as F

    def where(cond: Any, a: Any, b: Any) -> Any:
        return F.when(cond, a).otherwise(b)

    def lit(x: Any) -> Any:
        return x if hasattr(x, "alias") else F.lit(x)

    return Ops(
        floor=F.floor,
        maximum=lambda a, b: F.greatest(lit(a), lit(b)),
        minimum=lambda a, b: F.least(lit(a), lit(b)),
        where=where,
    )


def split_labels(
    n: Any,
    pos: Any,
    coin_test: Any,
    coin_valid: Any,
    *,
    valid: float,
    test: float,
    ops: Ops = NUMPY_OPS,
) -> Any:
    """The split label of a row at position ``pos`` (0-based, in the user's seeded order) of a
    user with ``n`` rows and coins ``coin_test``, ``coin_valid`` in [0, 1)."""
    held_out = n >= MIN_EVAL_ROWS
    n_test = ops.where(
        held_out, ops.minimum(ops.maximum(ops.floor(n * test + coin_test), 1), n - 2), 0
    )
    n_valid = ops.where(
        held_out,
        ops.minimum(ops.maximum(ops.floor(n * valid + coin_valid), 1), n - 1 - n_test),
        0,
    )
    return ops.where(pos >= n - n_test, TEST, ops.where(pos >= n - n_test - n_valid, VALID, TRAIN))


def split_pairs(
    user_key: np.ndarray, item_idx: np.ndarray, *, valid: float, test: float, seed: int
) -> np.ndarray:
    """The split label per row ("train" / "valid" / "test") of a log held as arrays: each
    user's rows in a seeded random order, the coins drawn per user from the same generator,
    labels by :func:`split_labels`. ``item_idx`` breaks no ties (the order is random); it is
    taken so that a call names the pairs it splits."""
    user_key = np.asarray(user_key)
    if len(user_key) != len(np.asarray(item_idx)):
        raise ValueError("user_key and item_idx differ in length")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(user_key)), user_key))
    u = user_key[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(u)])
    coins = rng.random((len(sizes), 2))
    n = np.repeat(sizes, sizes)
    pos = np.arange(len(u)) - np.repeat(starts, sizes)
    lab = split_labels(
        n,
        pos,
        np.repeat(coins[:, 0], sizes),
        np.repeat(coins[:, 1], sizes),
        valid=valid,
        test=test,
    )
    out = np.empty(len(user_key), dtype="<U5")
    out[order] = lab
    return out
