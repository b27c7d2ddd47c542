"""Checkpoints submitted by Hugging Face Hub model id, the way the Open LLM Leaderboard takes them.

A submission names a repo and a revision (a branch, tag or commit). At intake the revision is
resolved to the commit it points at, which is what the entry records and scores; the repo's
file list is checked (the checkpoint format's files at its root, sizes within the cap) before
anything is downloaded; then only those files are fetched and zipped into the project's
storage, where the worker reads them like any uploaded zip. A token (gated or private repos) is
passed to the Hub for these two calls only: it is never written to disk, the database or a log.
Without one, the calls are anonymous (``token=False``): never the server's own ``HF_TOKEN``,
which would let anyone have the maintainers' private or gated models fetched.

:class:`HubClient` is the network boundary (``huggingface_hub``); tests stand a local folder in
for the Hub's snapshot.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fileio import describe_sizes, deterministic_zip, quoted
from models.archive import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ALLOWED_FILES,
    CONFIG,
    CONVERT_HINT,
    PICKLE_SUFFIXES,
    WEIGHTS,
)
from submissions.errors import SubmissionError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
REVISION = re.compile(r"[\w.][\w./-]{0,199}")
COMMIT = re.compile(r"[0-9a-f]{40}")


class HubModelError(SubmissionError):
    """The Hub model cannot be submitted: offline, not found, gated, or not in the format."""


@dataclass(frozen=True)
class HubModel:
    """A Hub checkpoint pinned to one commit, and the format's files it holds (name: bytes)."""

    repo_id: str
    commit: str
    files: dict[str, int]

    @property
    def ref(self) -> str:
        """``owner/name@commit``: what the entry records."""
        return f"{self.repo_id}@{self.commit}"


class HubClient:
    """The Hub, through ``huggingface_hub`` (the one place that talks to it for submissions)."""

    def listing(self, repo_id: str, revision: str, token: str | bool) -> tuple[str, dict]:
        """The commit ``revision`` resolves to, and every file of the repo there with its size.

        ``token``: the submitter's, or False (anonymous; None would mean the server's own).
        """
        from huggingface_hub import HfApi, constants
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if constants.HF_HUB_OFFLINE:
            raise HubModelError(
                "This server is offline (HF_HUB_OFFLINE is set), so it cannot fetch "
                f"{repo_id} from the Hugging Face Hub. Upload the checkpoint as a zip instead."
            )
        try:
            info = HfApi().model_info(repo_id, revision=revision, files_metadata=True, token=token)
        except GatedRepoError as e:
            raise HubModelError(
                f"{repo_id} is gated: accept its conditions on the Hub and give a read token."
            ) from e
        except RevisionNotFoundError as e:
            raise HubModelError(f"{repo_id} has no revision '{revision}'.") from e
        except RepositoryNotFoundError as e:
            raise HubModelError(
                f"No model repo {repo_id} on the Hub (or it is private: give a read token)."
            ) from e
        except (HfHubHTTPError, OSError) as e:
            raise HubModelError(
                f"The Hub did not answer for {repo_id} ({type(e).__name__}); try again."
            ) from e
        except Exception as e:  # the network boundary: transport errors of any kind
            raise HubModelError(
                f"The Hub could not be reached for {repo_id} ({type(e).__name__}); try again."
            ) from e
        return info.sha, {f.rfilename: f.size for f in info.siblings or ()}

    def download(
        self, repo_id: str, commit: str, names: list[str], folder: Path, token: str | bool
    ) -> Path:
        """Fetch ``names`` of ``repo_id`` at ``commit`` into ``folder``; returns the folder."""
        from huggingface_hub import snapshot_download

        try:
            return Path(
                snapshot_download(
                    repo_id,
                    revision=commit,
                    allow_patterns=names,
                    local_dir=folder,
                    token=token,
                )
            )
        except Exception as e:  # the network boundary: whatever broke, the files are not here
            raise HubModelError(
                f"Fetching {repo_id}@{commit[:10]} failed ({type(e).__name__}); try again."
            ) from e


def check_reference(repo_id: str, revision: str) -> tuple[str, str]:
    """The repo id and revision, stripped, or ``HubModelError`` saying what a valid one is."""
    from huggingface_hub.utils import validate_repo_id

    repo_id, revision = (repo_id or "").strip(), (revision or "").strip() or "main"
    try:
        validate_repo_id(repo_id)
        valid = bool(REPO_ID.fullmatch(repo_id))
    except ValueError:
        valid = False
    if not valid:
        raise HubModelError(
            f"{quoted(repo_id)} is not a Hub model id; write it as owner/name, e.g. "
            "lab/mitosis-model."
        )
    if not REVISION.fullmatch(revision) or ".." in revision:
        raise HubModelError(
            f"{quoted(revision)} is not a revision; give a branch, a tag or a 40-digit commit."
        )
    return repo_id, revision


def checkpoint_files(repo_id: str, listing: dict[str, int | None], max_bytes: int) -> dict:
    """The format's files among a repo's ``listing``, checked before anything is downloaded.

    Only files at the repo's root named as the format names them are fetched (model cards,
    pickles and the rest stay on the Hub); a repo whose weights exist only as pickles is
    refused with the conversion hint, and the files' total must be within ``max_bytes``.
    """
    chosen = {name: size for name, size in listing.items() if name in ALLOWED_FILES}
    has_weights = WEIGHTS in chosen or {ADAPTER_CONFIG, ADAPTER_WEIGHTS} <= set(chosen)
    if CONFIG not in chosen or not has_weights:
        pickles = sorted(n for n in listing if n.lower().endswith(PICKLE_SUFFIXES))
        found = f" It holds {', '.join(pickles[:3])}." if pickles else ""
        raise HubModelError(
            f"{repo_id} has no checkpoint in this project's format at its root "
            f"(config.json + model.safetensors).{found} {CONVERT_HINT}"
        )
    if any(size is None for size in chosen.values()):
        raise HubModelError(f"The Hub did not list the sizes of {repo_id}'s files; try again.")
    total = sum(chosen.values())
    if total > max_bytes:
        shown, limit = describe_sizes(total, max_bytes)
        raise HubModelError(f"{repo_id}'s checkpoint files are {shown}; the limit is {limit}.")
    return chosen


def resolve_model(
    repo_id: str,
    revision: str,
    *,
    max_bytes: int,
    token: str | None = None,
    client: HubClient | None = None,
) -> HubModel:
    """The commit ``revision`` points at and the format's files there, checked; no download."""
    repo_id, revision = check_reference(repo_id, revision)
    client = client or HubClient()
    commit, listing = client.listing(repo_id, revision, token or False)
    if not COMMIT.fullmatch(commit or ""):
        raise HubModelError(f"The Hub gave no commit for {repo_id}@{revision}; try again.")
    return HubModel(repo_id, commit, checkpoint_files(repo_id, listing, max_bytes))


def fetch_checkpoint(
    model: HubModel, out_zip: Path, *, token: str | None = None, client: HubClient | None = None
) -> None:
    """Fetch a resolved model's files into ``out_zip`` (the format's files only).

    The files are fetched at the resolved commit, so a branch that moves meanwhile does not
    change what is scored; each fetched file must have the size the listing gave.
    """
    client = client or HubClient()
    repo_id, commit, files = model.repo_id, model.commit, model.files
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_zip.parent, prefix=".hub-") as scratch:
        folder = client.download(repo_id, commit, sorted(files), Path(scratch), token or False)
        for name, size in files.items():
            path = folder / name
            if not path.is_file() or path.is_symlink() or path.stat().st_size != size:
                raise HubModelError(
                    f"{repo_id}@{commit[:10]}: {name} did not arrive as listed; try again."
                )
        deterministic_zip(((name, folder / name) for name in files), out_zip)
