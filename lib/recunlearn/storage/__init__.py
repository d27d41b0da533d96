"""Storage: the data directory's layout, Delta I/O (``delta``), the forget ledger, the audit
table, published model versions (``versions``, ``registry``), checkpoints and the job lock."""
