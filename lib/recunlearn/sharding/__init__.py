"""Sharding: the partitioners (``partition``), the aggregators and the sharded ensemble
(``ensemble``), and sequential training over groups (``sequential``, LASER)."""
