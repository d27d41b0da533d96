"""Building a shard's matrices from Arrow batches: the same data as from whole columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recunlearn.data.interactions import InteractionData


@pytest.mark.parametrize("chunk", [1, 7, 1000, 100_000])
def test_streamed_batches_build_the_same_matrices_as_whole_columns(chunk):
    """Keys spread over batches, users with only held-out rows (left out), a repeated pair
    (counted once), dictionary-typed columns as Delta readers may give them."""
    rng = np.random.default_rng(3)
    n = 5000
    keys = np.array([f"user-{x:04d}" for x in rng.integers(0, 400, n)])
    items = rng.integers(0, 300, n)
    split = rng.choice(["train", "valid", "test"], n, p=[0.7, 0.15, 0.15])
    split[keys == "user-0007"] = "test"  # no training row: not a row of the matrices
    keys = np.r_[keys, ["user-0001", "user-0001"]]
    items = np.r_[items, [5, 5]]
    split = np.r_[split, ["train", "train"]]
    want = InteractionData.from_columns(keys, items, split, 310)
    tbl = pa.table(
        {
            "user_key": pa.array(keys).dictionary_encode(),
            "item_idx": pa.array(items, pa.int32()),
            "split": pa.array(split),
        }
    )
    got = InteractionData.from_batches(tbl.to_batches(max_chunksize=chunk), 310)
    assert "user-0007" not in got.user_keys
    assert got.user_keys.tolist() == want.user_keys.tolist()
    for name in ("train", "valid", "test"):
        a, b = getattr(want, name), getattr(got, name)
        assert a.shape == b.shape and (a != b).nnz == 0
        assert b.indices.dtype == np.int32 and b.data.max() == 1.0
    assert got.train.nnz > 0


def test_no_batches_give_an_empty_data_set():
    got = InteractionData.from_batches([], 10)
    assert got.n_users == 0 and got.n_items == 10 and got.train.nnz == 0
