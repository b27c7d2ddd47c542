"""Exception types of the store; messages say what must hold and what to do."""

from __future__ import annotations


class InvalidMetadata(ValueError):
    """The form that describes an entry is incomplete or malformed."""
