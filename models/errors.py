"""Exception types of the models package; each message says what must hold and what to do."""

from __future__ import annotations


class ModelError(ValueError):
    """Base class of every error the models package raises on purpose."""


class CheckpointError(ModelError):
    """A checkpoint is incomplete or does not match its architecture."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint holds files that could run code when loaded (pickles) or escape its folder."""


class ImageError(ModelError):
    """An input is not an image the Predictor can read."""
