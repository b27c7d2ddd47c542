"""Exception types of the store; messages say what must hold and what to do."""

from __future__ import annotations


class InvalidMetadata(ValueError):
    """The form that describes an entry is incomplete or malformed."""


class StoreUnavailable(RuntimeError):
    """The database cannot be opened: a malformed URL, a missing driver, or no answer."""


class BackupRefused(RuntimeError):
    """The database cannot be backed up here (another kind of server, or no file)."""
