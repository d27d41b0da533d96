"""Domain exceptions. Messages name the argument and the bad value (never a raw user id)."""


class RecUnlearnError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RecUnlearnError):
    """A configuration value is missing, malformed or contradicts another one."""


class DataError(RecUnlearnError):
    """Input data is malformed (bad rows, missing columns, failed checksum)."""


class FetchError(DataError):
    """A data set could not be downloaded from any of its sources."""


class RequestError(RecUnlearnError):
    """A forget request is malformed or names a target that does not exist."""


class LedgerConflictError(RecUnlearnError):
    """A Delta write kept conflicting with concurrent writers after the retries ran out."""


class PipelineError(RecUnlearnError):
    """A pipeline step failed; the message says which step and what was left untouched."""


class AuditError(RecUnlearnError):
    """The audit found forgotten data that should not be there."""


class JobConflictError(RecUnlearnError):
    """Another job holds the tables (ingest, partition, train and unlearn run one at a time);
    this one changed nothing."""


class EngineStartError(RecUnlearnError):
    """Spark or Ray did not start (or could not be reached) after the configured tries; the
    message names the engine, what was tried and what to check. Nothing was changed."""
