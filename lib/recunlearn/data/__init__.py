"""Data: the log readers (``readers``), the shipped data sets (``datasets``), pseudonymous
keys (``pseudonym``) and the in-memory interaction matrices a model trains on
(``interactions``)."""
