"""Intake of submissions.

Validate (instant; nothing is stored when invalid), deduplicate, apply the per-user limits,
store by hash, record the submission and its job in one transaction, enqueue.

An upload is a file on disk (what Gradio hands the app) or bytes. Its size is checked before
it is read; a checkpoint zip is judged by its entries' headers and then streamed through in
chunks (sizes and CRCs), so no upload is ever held whole in memory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload, sessionmaker

from evaluation.bundle import PublicBundle
from evaluation.prediction_file import read_predictions
from fileio import describe_sizes, quoted, source_size
from models.archive import CheckpointFiles
from models.checkpoint import inspect_checkpoint
from models.errors import CheckpointError
from models.inference import check_crop_memory
from settings import Settings
from store.clock import store_now
from store.entry import EntryMetadata
from store.locks import lock_account
from store.schema import ALL_SPLITS, PUBLIC_ONLY, Job, JobStatus, Submission
from store.shared_values import store_id
from submissions import jobs, worker_registry
from submissions.errors import (
    DuplicateSubmission,
    NotCancellable,
    SubmissionError,
    UploadMissing,
)
from submissions.hub_models import HubClient, HubModel, fetch_checkpoint, resolve_model
from submissions.job_view import JobView, job_view
from submissions.moderation import withdraw
from submissions.queue import EvaluationQueue
from submissions.quota import check_limits, check_public_only, remaining_scorings
from submissions.storage import sha256, store_file, stored_path

RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
Upload = Path | str | bytes


class Submissions:
    """The submission service used by the app (one per process)."""

    def __init__(
        self, settings: Settings, sessions: sessionmaker, queue: EvaluationQueue | None = None
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.queue = queue or EvaluationQueue(settings, store_id(sessions))
        self._bundle: PublicBundle | None = None

    @property
    def bundle(self) -> PublicBundle:
        """The public release (loaded on first use)."""
        if self._bundle is None:
            self._bundle = PublicBundle(self.settings.public_dir)
        return self._bundle

    def submit_predictions(
        self, user: str, upload: Upload, meta: EntryMetadata, *, public_only: bool = False
    ) -> JobView:
        """Validate and queue a prediction file (a self-reported entry); the file first.

        ``public_only`` scores AMi-Br test alone (its labels are public): no hidden scoring is
        spent and nothing goes on the board, for checking a file or an ablation.
        """
        upload = _present(upload)
        read_predictions(
            upload, self.bundle.manifest, max_bytes=self.settings.max_prediction_file_bytes
        )
        meta = meta.validated()
        scope = PUBLIC_ONLY if public_only else ALL_SPLITS
        return self._record(user, upload, ".csv", "predictions", meta, lane="files", scope=scope)

    def submit_checkpoint(
        self, user: str, upload: Upload, meta: EntryMetadata, *, hub: HubModel | None = None
    ) -> JobView:
        """Validate and queue a zipped checkpoint (a verified entry once the server ran it).

        ``hub``: the Hub model the zip was fetched from (see :meth:`submit_hub_model`).
        """
        upload = _present(upload)
        cap = self.settings.max_checkpoint_bytes
        size = source_size(upload)
        if size > cap:
            shown, limit = describe_sizes(size, cap)
            raise CheckpointError(f"The zip is {shown}; the limit is {limit}.")
        if not isinstance(upload, bytes) and Path(upload).suffix.lower() != ".zip":
            raise CheckpointError(
                f"{Path(upload).name} is not a .zip; zip the checkpoint folder (config.json + "
                "model.safetensors) and upload the zip."
            )
        with CheckpointFiles.open(
            upload if isinstance(upload, bytes) else Path(upload), max_bytes=cap
        ) as files:
            summary = inspect_checkpoint(files)
            check_crop_memory(summary["input_size"], self.settings.batch_memory_bytes)
            content = files.verify()
        flops = summary["flops_per_crop"]
        meta = meta.validated()
        lane, estimated = worker_registry.route(
            self.sessions,
            flops * len(self.bundle.manifest),
            time_limit_s=self.settings.job_time_limit_s,
            default_gflops=self.settings.cpu_gflops,
        )
        return self._record(
            user,
            upload,
            ".zip",
            "checkpoint",
            meta,
            lane=lane,
            flops=flops,
            estimated=estimated,
            hub_ref=hub.ref if hub else "",
            content=content,
        )

    def submit_hub_model(
        self,
        user: str,
        repo_id: str,
        revision: str,
        meta: EntryMetadata,
        *,
        token: str | None = None,
        client: HubClient | None = None,
    ) -> JobView:
        """Fetch a Hub checkpoint (pinned to the commit ``revision`` resolves to) and queue it.

        The form and the user's limits are checked first, so nothing is downloaded for a
        submission that would be refused. ``token`` (gated or private repos) is used for the
        fetch only and kept nowhere; the fetched zip then takes an upload's path exactly.
        """
        meta = meta.validated()
        with self.sessions.begin() as session:  # checked again, under the lock, when recorded
            check_limits(session, user, "checkpoint", self.settings)
        model = resolve_model(
            repo_id,
            revision,
            max_bytes=self.settings.max_checkpoint_bytes,
            token=token,
            client=client,
        )
        with self.sessions() as session:  # fetched before: its stored copy, not a new download
            known = session.scalar(select(Submission).where(Submission.hub_ref == model.ref))
            stored = self.settings.data_dir / known.path if known is not None else None
        if stored is not None and stored.is_file():
            return self.submit_checkpoint(user, stored, meta, hub=model)
        incoming = self.settings.data_dir / "uploads" / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=incoming) as scratch:
            fetched = Path(scratch) / "checkpoint.zip"
            fetch_checkpoint(model, fetched, token=token, client=client)
            return self.submit_checkpoint(user, fetched, meta, hub=model)

    def _record(
        self,
        user,
        upload,
        suffix,
        kind,
        meta,
        *,
        lane,
        flops=0.0,
        estimated=0.0,
        hub_ref="",
        scope=ALL_SPLITS,
        content=None,
    ):
        digest = sha256(upload)
        same = Submission.sha256 == digest
        if content:  # another zip of the same checkpoint is the same submission
            same = or_(same, Submission.content_sha256 == content)
        uploads = self.settings.data_dir / "uploads"
        created = False
        try:
            with self.sessions.begin() as session:
                lock_account(session, user)
                existing = session.scalar(
                    select(Submission)
                    .options(selectinload(Submission.jobs))
                    .where(same)
                    .order_by(Submission.id)
                    .limit(1)
                )
                it = "This file was"
                if existing is not None and existing.sha256 != digest:
                    it = "These checkpoint files (in another zip) were"
                if existing is not None and existing.user != user:
                    self._duplicate()
                if existing is not None and hub_ref and not existing.hub_ref:
                    existing.hub_ref = hub_ref  # the same files, now also known by Hub id
                if existing and (shown := _serving_job(existing.jobs, scope)):
                    notice = f"{it} already submitted: its job is shown, not a new one."
                    entry = _serving_job(existing.jobs, ALL_SPLITS)  # on every split
                    if scope == PUBLIC_ONLY and entry:  # a check leaves the entry as it is
                        notice = (
                            "This file is already submitted for every split: its job is shown, "
                            "and a public-split check leaves the entry's description as it is."
                        )
                    elif existing.meta != meta.to_dict():
                        old, new = existing.meta.get("model_name", ""), meta.model_name
                        renamed = f", and it is renamed from {quoted(old)} to {quoted(new)}"
                        renamed = renamed if old != new else ""
                        existing.meta = meta.to_dict()
                        notice = (
                            f"{it} already submitted, so it is not scored again; the "
                            f"entry's description was updated to the one given now{renamed}."
                        )
                    session.flush()
                    return job_view(session, shown, notice=notice)
                if scope == PUBLIC_ONLY:
                    check_public_only(session, user)
                else:
                    check_limits(session, user, kind, self.settings)
                submission = existing
                if submission is not None:  # a failed or cancelled file, tried again
                    submission.meta = meta.to_dict()
                if submission is None:
                    created = store_file(uploads, upload, digest, suffix)
                    submission = Submission(
                        sha256=digest,
                        content_sha256=content,
                        kind=kind,
                        user=user,
                        path=str(
                            stored_path(uploads, digest, suffix).relative_to(self.settings.data_dir)
                        ),
                        size_bytes=source_size(upload),
                        meta=meta.to_dict(),
                        hub_ref=hub_ref,
                    )
                job = Job(
                    submission=submission,
                    status=JobStatus.QUEUED,
                    created_at=store_now(session),  # the quota's window: one clock for all hosts
                    counts_toward_quota=scope != PUBLIC_ONLY,
                    scope=scope,
                    lane=lane,
                    flops_per_crop=flops,
                    estimated_s=estimated,
                )
                session.add_all([submission, job])
                session.flush()
                job_id = job.id
        except IntegrityError:  # another user's copy of the same file won the race
            self._duplicate()
        except BaseException:
            if created:  # nothing refers to the copy written in the failed transaction
                stored_path(uploads, digest, suffix).unlink(missing_ok=True)
            raise
        self.queue.enqueue(job_id, lane)
        return self.status(user, job_id)

    @staticmethod
    def _duplicate():
        raise DuplicateSubmission(
            "This exact file (or checkpoint) was already submitted by another user; entries "
            "must be your own work."
        )

    def status(self, user: str, job_id: int) -> JobView:
        """One of ``user``'s jobs."""
        with self.sessions() as session:
            job = jobs.user_job(session, job_id, user)
            return job_view(session, job)

    def my_submissions(self, user: str) -> list[JobView]:
        """Every job of ``user``, newest first."""
        with self.sessions() as session:
            found = session.scalars(
                select(Job).join(Submission).where(Submission.user == user).order_by(Job.id.desc())
            ).all()
            return [job_view(session, job) for job in found]

    def allowance(self, user: str) -> str:
        """What ``user`` may still submit today, in words."""
        with self.sessions() as session:
            return remaining_scorings(session, user, self.settings)

    def cancel(self, user: str, job_id: int) -> JobView:
        """Cancel a queued job of ``user``; ``NotCancellable`` once it has started."""
        if not jobs.cancel(self.sessions, job_id, user):
            view = self.status(user, job_id)  # JobNotFound for other users' jobs
            raise NotCancellable(
                f"Job {job_id} is {view.status}; only a queued job can be cancelled."
            )
        return self.status(user, job_id)

    def withdraw(self, user: str, job_id: int) -> JobView:
        """Take the entry of one of ``user``'s jobs off the public board (every surface).

        What was released stays counted (:func:`submissions.moderation.withdraw`).
        """
        withdraw(self.sessions, user, job_id)
        return self.status(user, job_id)


def _serving_job(existing: list[Job], scope: str) -> Job | None:
    """The job that already serves a file submitted again for ``scope`` (None: it needs one).

    A job serves unless it failed or was cancelled; for every split, only a scoring of every
    split does (not a public check), and for a public check any job does. So a failed or
    cancelled scoring is tried again whatever came after it, and a scored file is not scored
    again (nor counted) after a re-scoring of it failed.
    """
    live = [job for job in existing if job.status not in RETRYABLE]
    if scope == ALL_SPLITS:
        live = [job for job in live if job.scope == ALL_SPLITS]
    return live[-1] if live else None


def _present(upload: Upload) -> Upload:
    """The upload, or ``UploadMissing`` when its file is gone (an expired cache entry)."""
    if isinstance(upload, bytes) or Path(upload).is_file():
        return upload
    raise UploadMissing("The uploaded file is no longer on the server; choose it again.")


__all__ = ["SubmissionError", "Submissions"]
