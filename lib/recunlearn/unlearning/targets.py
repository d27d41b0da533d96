"""What a batch of forget requests deletes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Targets:
    """Whole users (keys), items (every interaction with each) and single interactions
    (key, item), and the shards holding any of it."""

    users: list[str]
    items: list[int]
    pairs: list[tuple[str, int]]
    touched: list[int]
    shards_of: dict[str, list[int]]  # request id -> the shards holding its data
    planned: list[str] = field(default_factory=list)  # the requests this run planned (to delete)
    # shards whose members changed otherwise (a strict repartition): retrained beside touched
    also: list[int] = field(default_factory=list)
