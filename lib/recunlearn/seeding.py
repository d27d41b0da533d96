"""Seeds derived per component from one root seed (never global seeding).

``make_seed(root, "shard", 3)`` always gives the same 63-bit seed for shard 3, whatever else
the run did, so a shard retrained alone reproduces the shard trained with the others.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def make_seed(root: int, *keys: object) -> int:
    """A stable seed for the component named by ``keys`` under ``root``."""
    text = ":".join([str(int(root)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def numpy_rng(root: int, *keys: object) -> np.random.Generator:
    return np.random.default_rng(make_seed(root, *keys))


def torch_gen(root: int, *keys: object) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(make_seed(root, *keys))
    return g
