"""Attribute unlearning: remove what user embeddings reveal about a sensitive attribute.

- :mod:`labels`: the attribute values (gender, age group) from a data set's user file,
  read at job time and held in memory only, never written to a table;
- :mod:`attack`: the attribute-inference attacker the field evaluates with (an MLP and
  gradient boosting on user embeddings), trained and tested on disjoint users;
- :mod:`edit`: post-training unlearning, which edits user embeddings (no training data
  needed), per user or for everyone, and the overlay that keeps the edit reversible;
- :mod:`adversarial`: in-training unlearning against an attacker head (a confusion loss, or
  gradient reversal).
"""
