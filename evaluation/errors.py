"""Exception types of the evaluation package; each message says what must hold and what to do."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Base class of every error the evaluation package raises on purpose."""


class SourceError(EvaluationError):
    """The public AMi-Br source release is missing, incomplete or corrupt."""


class ReleaseNotFound(EvaluationError):
    """The public bundle has not been built yet (run ``python -m evaluation.release``)."""


class LabelsUnavailable(EvaluationError):
    """A hidden split was asked for but the private label store is not available."""


class InvalidPredictionFile(EvaluationError):
    """A prediction file breaks the format of the public prediction-file specification."""


class TimeLimitExceeded(EvaluationError):
    """Running a checkpoint took longer than MITOSIS_JOB_TIME_LIMIT_S."""
