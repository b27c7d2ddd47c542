"""The services behind the Space's handlers, and how a handler's errors become messages."""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from evaluation.bundle import PublicBundle
from evaluation.errors import EvaluationError
from fileio import atomic_write, quoted
from leaderboard.board import build_board, classify_models
from leaderboard.errors import LeaderboardError
from leaderboard.ranking import Entry
from models.errors import ModelError
from settings import Settings
from store.engine import open_store
from store.errors import InvalidMetadata
from submissions.errors import SubmissionError
from submissions.identity import resolve_user
from submissions.intake import Submissions
from worker.supervisor import InteractiveSignal

try:  # ZeroGPU hardware on a Space: the decorator attaches a GPU for each call
    import spaces

    gpu, ZERO_GPU = spaces.GPU, True
except ImportError:
    ZERO_GPU = False

    def gpu(fn):
        return fn


log = logging.getLogger(__name__)
DEFAULT_MODEL = "Default model (shipped)"
MODELS_TTL_S = 5.0
KEPT_DOWNLOADS = 64  # shared downloads (versions of the board's exports) kept on disk
USER_ERRORS = (EvaluationError, ModelError, InvalidMetadata, SubmissionError, LeaderboardError)


def user_facing(fn):
    """Project errors become their message; anything else a generic one (and a log entry)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            refused(fn, e)
            raise
        except USER_ERRORS as e:
            message = gr.Error(str(e))
            refused(fn, message)
            raise message from e
        except Exception as e:
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(
                "Internal error; the maintainers can find it in the log.", print_exception=False
            ) from e

    return wrapper


def refused(fn, error: gr.Error) -> None:
    """A refusal is the user's answer, not a fault: one short log line instead of a traceback."""
    error.print_exception = False
    log.info("%s refused: %s", fn.__name__, quoted(str(error.message), 200))


def bind(handler, space: Space):
    """``handler(space, ...)`` as an event calls it: ``space`` given, its other parameters kept.

    Handlers are module-level functions of the space and the inputs, so tests call them in
    this process; Gradio reads the bound signature (inputs, ``gr.OAuthProfile``, API types)
    and the docstring (the API's description).
    """
    if inspect.isgeneratorfunction(handler) or inspect.iscoroutinefunction(handler):
        raise TypeError(f"{handler.__name__}: bind() wraps plain functions only")

    @functools.wraps(handler)
    def bound(*args, **kwargs):
        return handler(space, *args, **kwargs)

    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


class Space:
    """The services behind the handlers, created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.on_space = bool(settings.space_id)
        self._submissions: Submissions | None = None
        self._downloads = tempfile.TemporaryDirectory(prefix="mitosis-downloads-")
        self._models: dict[str, Path] = {}
        self._models_read = -float("inf")
        self.users_waiting = InteractiveSignal(settings.data_dir)  # the worker pauses for them

    def download_path(self, name: str) -> Path:
        """A fresh file for a download, in a folder removed when the process ends.

        Gradio copies the file into its own cache, which ``delete_cache`` cleans; the
        folder here keeps the newest :data:`KEPT_DOWNLOADS`.
        """
        self._prune_downloads()
        return Path(tempfile.mkdtemp(dir=self._downloads.name)) / name

    def shared_download(self, name: str, text: str) -> Path:
        """A download of ``text`` that every request for the same text shares.

        The board's exports are offered on every refresh; keyed by their content, they take
        one file per version of the board, not one per page view.
        """
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        path = Path(self._downloads.name) / digest / name
        if not path.is_file():
            atomic_write(path, lambda tmp: tmp.write_text(text))
            self._prune_downloads()
        return path

    def _prune_downloads(self) -> None:
        """Keep the newest :data:`KEPT_DOWNLOADS` downloads: Gradio serves its own copies."""
        folders = sorted(
            (f for f in Path(self._downloads.name).iterdir() if f.is_dir()),
            key=lambda f: f.stat().st_mtime_ns,
        )
        for folder in folders[:-KEPT_DOWNLOADS]:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def submissions(self) -> Submissions:
        """The submission service (and the store behind it)."""
        if self._submissions is None:
            self._submissions = Submissions(self.settings, open_store(self.settings.database_url))
        return self._submissions

    @property
    def sessions(self):
        """The store's session factory."""
        return self.submissions.sessions

    def user(self, profile: gr.OAuthProfile | None) -> str:
        """The signed-in user; offline, the configured local identity."""
        if profile is None and self.on_space:
            raise gr.Error("Sign in with Hugging Face to submit and to see your submissions.")
        return resolve_user(profile.username if profile else None, self.settings)

    def models(self) -> dict[str, Path]:
        """Model choices: the shipped one and every verified checkpoint stored here.

        Read from the store at most every few seconds: not once per classified crop.
        """
        if time.monotonic() - self._models_read > MODELS_TTL_S:
            self._models = classify_models(
                self.sessions,
                self.settings.default_checkpoint,
                self.settings.data_dir,
                DEFAULT_MODEL,
            )
            self._models_read = time.monotonic()
        return self._models

    def model_path(self, name: str | None) -> str:
        """The checkpoint behind a model choice."""
        path = self.models().get(name or DEFAULT_MODEL)
        if path is None:
            raise gr.Error(f"Unknown model {name!r}; choose one of the list.")
        return str(path)

    def board(self) -> list[Entry]:
        """The ranked entries (released numbers only)."""
        return build_board(self.sessions)

    def public_label(self, image: str) -> str | None:
        """The AMi-Br test label of a public test crop (None for any other image)."""
        try:
            return self.submissions.bundle.public_label_of(image)
        except (EvaluationError, OSError):  # no release here, or no AMi-Br test labels in it
            return None

    def examples(self) -> list[list[str]]:
        """A few public AMi-Br test crops for the Classify tab."""
        try:
            bundle = PublicBundle(self.settings.public_dir)
        except EvaluationError:
            return []
        return [
            [str(bundle.test_crops_dir / f"{i}.png")] for i in bundle.split_ids("amibr_test")[:8]
        ]
