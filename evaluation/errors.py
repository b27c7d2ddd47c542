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


class InvalidLabelStore(EvaluationError):
    """The private label store is there but cannot be trusted.

    It is unreadable, malformed, or its labels changed since the release that wrote it was
    built. ``problem`` is what is wrong, without where or what to do, for callers that say those.
    """

    def __init__(self, problem: str, message: str) -> None:
        super().__init__(message)
        self.problem = problem


class InvalidPredictionFile(EvaluationError):
    """A prediction file breaks the format of the public prediction-file specification."""


class ModelRunFailed(EvaluationError):
    """A checkpoint failed on the test crops for a reason of its own: its run time is charged.

    The time limit, memory it cannot get, or outputs that are not probabilities.
    """


class TimeLimitExceeded(ModelRunFailed):
    """Running a checkpoint took longer than MITOSIS_JOB_TIME_LIMIT_S."""
