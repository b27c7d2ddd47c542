"""Exception types of the leaderboard package; messages say what must hold and what to do."""

from __future__ import annotations


class LeaderboardError(ValueError):
    """Base class of every error the leaderboard package raises on purpose."""


class NotPublishable(LeaderboardError):
    """A scoring cannot be published: not withheld, below the floor, or no allowance left."""


class EntryNotOnBoard(LeaderboardError):
    """The entry asked for is not on the board (any more): withdrawn, re-scored or never there."""


class UnknownFilter(LeaderboardError):
    """A board filter names a method, source or track that no entry can have."""
