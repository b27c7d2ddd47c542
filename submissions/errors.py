"""Exception types of the submissions package; messages say what must hold and what to do."""

from __future__ import annotations


class SubmissionError(ValueError):
    """Base class of every error the submissions package raises on purpose."""


class QuotaExceeded(SubmissionError):
    """The user has used up their hidden-split scorings for the rolling 24 hours."""


class DuplicateSubmission(SubmissionError):
    """The same file was already submitted by another user."""


class JobNotFound(SubmissionError):
    """No job with that id belongs to the user."""


class UploadMissing(SubmissionError):
    """The uploaded file is gone before it could be read (an expired upload cache entry)."""


class NotCancellable(SubmissionError):
    """The job has started (or ended), so it can no longer be cancelled."""


class NotWithdrawable(SubmissionError):
    """The entry is not the user's, or already withdrawn."""


class ModerationRefused(SubmissionError):
    """A take-down or restore the maintainers asked for cannot be done as asked."""


class ReservedAccount(SubmissionError):
    """The signed-in name is one the server uses for its own entries."""


class QueueUnavailable(RuntimeError):
    """The queue's server (Redis, for MITOSIS_QUEUE_URL) does not answer."""
