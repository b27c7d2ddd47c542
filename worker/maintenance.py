"""The worker's upkeep of the store: the seed rows, the shipped model, re-scoring.

Seeds the paper's rows and the shipped model's job once per database; queues submissions
again when the label set changes (watched every 30 s), when an older scorer's results can be
re-scored (no worker of an older scorer alive; checked every 30 s), or on ``--rescore``; a new
job takes the lane and the cost of its submission's last one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from evaluation.bundle import LabelStore, PublicBundle
from evaluation.errors import InvalidLabelStore
from evaluation.scoring import SCORER_VERSION
from fileio import zip_folder
from leaderboard.paper import seed_paper_rows
from leaderboard.pathologists import seed_pathologist_rows
from leaderboard.publication import release_pending
from models.archive import CheckpointFiles
from models.checkpoint import inspect_checkpoint
from models.errors import CheckpointError
from settings import Settings
from store.clock import store_now
from store.locks import RESCORING, hold_lock
from store.schema import (
    ALL_SPLITS,
    OPEN_STATES,
    PUBLIC_ONLY,
    SHIPPED_MODEL_USER,
    Job,
    JobStatus,
    Result,
    Submission,
)
from submissions import worker_registry
from submissions.queue import EvaluationQueue
from submissions.storage import sha256, store_file, stored_path
from worker.shipped_entry import checkpoint_entry

log = logging.getLogger("worker")


class Maintenance:
    """Seeding and re-scoring, for a worker's store and queue."""

    def __init__(self, settings: Settings, sessions: sessionmaker, queue: EvaluationQueue, stop):
        self.settings = settings
        self.sessions = sessions
        self.queue = queue
        self.stop = stop

    def seed(self) -> int | None:
        """The paper's rows and the shipped model, once per database; the model's new job id.

        The shipped model is queued again when its last job failed (say, the worker started
        before the release was built), but not by a worker without the label store, whose job
        would only fail, nor without the checkpoint (both logged).
        """
        seed_paper_rows(self.sessions)
        self.seed_pathologists()
        release_pending(self.sessions, self.settings)
        checkpoint = self.settings.default_checkpoint
        if not checkpoint.exists():
            log.error("no checkpoint at %s (MITOSIS_DEFAULT_CHECKPOINT): not evaluated", checkpoint)
            return None
        if LabelStore.current_hash(self.settings.labels_dir) is None:
            log.warning(
                "no private label store at %s (MITOSIS_LABELS_DIR; MITOSIS_LABELS_REPO fetches "
                "one): the shipped model is not evaluated, and hidden-split jobs fail",
                self.settings.labels_dir,
            )
            return None
        data = zip_folder(checkpoint)
        digest = sha256(data)
        try:
            job_id = self._seed_default_model(data, digest)
        except IntegrityError:  # another worker seeded it at the same moment
            return None
        if job_id is not None:
            self._enqueue(job_id)
        return job_id

    def _enqueue(self, job_id: int) -> None:
        with self.sessions() as session:
            lane = session.get(Job, job_id).lane
        if lane in self.queue.lanes:
            self.queue.enqueue(job_id, lane)
        else:  # a lane this worker does not serve: its message goes to the lane's own queue
            EvaluationQueue(self.settings, self.queue.store_id, lanes=(lane,)).enqueue(job_id, lane)

    def _again(self, session: Session, submission: Submission) -> Job:
        """A new job for ``submission``, in the lane (and with the cost) of its last one."""
        last = submission.jobs[-1] if submission.jobs else None
        lane, flops, estimated = "files", 0.0, 0.0
        if last is not None:
            lane, flops, estimated = last.lane, last.flops_per_crop, last.estimated_s
        elif submission.kind == "checkpoint":
            lane, flops, estimated = self._route(self.settings.data_dir / submission.path)
        finished = [j for j in submission.jobs if j.status == JobStatus.FINISHED]
        public_only = finished and all(j.scope == PUBLIC_ONLY for j in finished)
        return Job(
            submission=submission,
            status=JobStatus.QUEUED,
            created_at=store_now(session),
            counts_toward_quota=False,
            scope=PUBLIC_ONLY if public_only else ALL_SPLITS,  # a check stays a check
            lane=lane,
            flops_per_crop=flops,
            estimated_s=estimated,
        )

    def _route(self, checkpoint: Path) -> tuple[str, float, float]:
        with CheckpointFiles.open(checkpoint, max_bytes=self.settings.max_checkpoint_bytes) as f:
            flops = inspect_checkpoint(f)["flops_per_crop"]
        crops = len(PublicBundle(self.settings.public_dir).manifest)
        lane, estimated = worker_registry.route(
            self.sessions,
            flops * crops,
            time_limit_s=self.settings.job_time_limit_s,
            default_gflops=self.settings.cpu_gflops,
        )
        return lane, flops, estimated

    def _seed_default_model(self, data: bytes, digest: str) -> int | None:
        with self.sessions.begin() as session:
            existing = session.scalar(select(Submission).where(Submission.sha256 == digest))
            if existing is not None:
                if existing.jobs and existing.jobs[-1].status not in (
                    JobStatus.FAILED,
                    JobStatus.CANCELLED,
                ):
                    return None
                job = self._again(session, existing)
                session.add(job)
                session.flush()
                return job.id
            uploads = self.settings.data_dir / "uploads"
            store_file(uploads, data, digest, ".zip")
            submission = Submission(
                sha256=digest,
                content_sha256=_content_digest(data, self.settings.max_checkpoint_bytes),
                kind="checkpoint",
                user=SHIPPED_MODEL_USER,
                meta=checkpoint_entry(self.settings.default_checkpoint).to_dict(),
                path=str(stored_path(uploads, digest, ".zip").relative_to(self.settings.data_dir)),
                size_bytes=len(data),
            )
            job = self._again(session, submission)
            session.add_all([submission, job])
            session.flush()
            return job.id

    def record_content_digests(self) -> int:
        """Content digests of the checkpoints stored before they were recorded (migration 0005).

        Another zip of one of those is then the same submission, as for any newer one. Of two
        stored copies of one checkpoint (possible before 0005) the older keeps the digest; the
        newer, like a file that cannot be read, is read again at the next start (the worker
        does this beside its serving, not before it).
        """
        with self.sessions() as session:
            rows = session.execute(
                select(Submission.id, Submission.path)
                .where(Submission.kind == "checkpoint", Submission.content_sha256.is_(None))
                .order_by(Submission.id)
            ).all()
        recorded = 0
        for submission_id, path in rows:
            try:
                stored = self.settings.data_dir / path
                digest = _content_digest(stored, self.settings.max_checkpoint_bytes)
            except (CheckpointError, OSError) as e:
                log.warning("submission %d: no content digest (%s)", submission_id, e)
                continue
            try:
                with self.sessions.begin() as session:
                    taken = select(Submission.id).where(Submission.content_sha256 == digest)
                    if session.scalar(taken) is None:
                        session.get(Submission, submission_id).content_sha256 = digest
                        recorded += 1
            except IntegrityError:  # another worker recorded it for another copy just now
                continue
        if recorded:
            log.info("recorded the content digest of %d checkpoint(s) stored before 0005", recorded)
        return recorded

    def seed_pathologists(self) -> None:
        """The experts' reference rows for the label store's current label set.

        A store that fails its check is logged and left: the worker serves on, and its jobs say
        why they fail.
        """
        try:
            labels = LabelStore.if_present(self.settings.labels_dir)
        except InvalidLabelStore as e:
            log.error("%s", e)
            return
        if labels is not None:
            seed_pathologist_rows(self.sessions, labels.reader_votes(), labels.label_set_hash)

    def rescore_all(self) -> int:
        """A new job for every scored submission; their old results stay as history.

        Also those whose automatic re-scoring failed: the maintainer asks again. A submission
        never scored (cancelled, or failed) is left alone: a re-scoring of it would be a
        hidden scoring that no quota counted, and a check stays a check.
        """
        return self._rescore(self._scored(true()))

    def rescore_stale(self) -> int:
        """A new job for every submission scored against other labels, or by an older scorer.

        Runs at start and whenever the label-set hash changes (a maintainer rebuilt the label
        store), so the board never mixes label sets; submissions with a job already queued or
        running are left to it. Older scorers' results are included when
        :meth:`rescore_older_scorers` would take them. However many workers see the change, a
        submission whose re-scoring for these labels and this scorer failed since its current
        results is not queued again (see the job's reason, then ``--rescore``).
        """
        current = LabelStore.current_hash(self.settings.labels_dir)
        if current is None:
            return 0
        self.seed_pathologists()
        stale = Result.label_set_hash != current
        if older := self._older_scorers():
            stale = or_(stale, Result.scorer_version.in_(older))
        return self._rescore(self._scored(stale), target=current, tell_tried=True)

    def rescore_older_scorers(self) -> int:
        """A new job for every submission whose current results an older scorer wrote.

        Only once no live worker scores with an older scorer (or one that does not say): during
        a rolling upgrade the old workers would score those jobs the old way again. Checked at
        start and every 30 s, so the board settles on one scorer version once the last old
        worker has gone. As with :meth:`rescore_stale`, a failed re-scoring for the same label
        set and scorer is not queued again.
        """
        if not (older := self._older_scorers()):
            return 0
        target = LabelStore.current_hash(self.settings.labels_dir) or ""
        return self._rescore(self._scored(Result.scorer_version.in_(older)), target=target)

    def _older_scorers(self) -> list[str]:
        """Scorer versions of current results older than this worker's, when they may go."""
        live = worker_registry.live_scorer_versions(self.sessions)
        if any(not theirs or older_scorer(theirs) for theirs in live):  # None: older code
            return []
        with self.sessions() as session:
            versions = session.scalars(
                select(Result.scorer_version)
                .where(Result.current.is_(True), Result.job_id.is_not(None))
                .distinct()
            ).all()
        return [v for v in versions if older_scorer(v)]

    @staticmethod
    def _scored(condition):
        """Submissions whose current results, written by a job, meet ``condition``."""
        return (
            select(Result.submission_id)
            .where(Result.current.is_(True), Result.job_id.is_not(None), condition)
            .distinct()
        )

    def _rescore(self, submission_ids, target: str | None = None, tell_tried=False) -> int:
        """Queue ``submission_ids`` again, except those with an open job.

        With ``target`` (a label-set hash), also except those whose re-scoring for it failed
        (:func:`failed_for`); ``None`` is a maintainer's ``--rescore``. ``tell_tried`` logs how
        many failed ones are left.
        """
        with self.sessions.begin() as session:
            hold_lock(session, RESCORING)  # one worker at a time decides what to queue
            open_jobs = select(Job.submission_id).where(Job.status.in_(OPEN_STATES))
            left = open_jobs if target is None else open_jobs.union(failed_for(target))
            chosen = session.scalars(
                select(Submission).where(
                    Submission.id.in_(submission_ids), ~Submission.id.in_(left)
                )
            ).all()
            failed = tell_tried and _failed_left(session, submission_ids, target, open_jobs)
            if failed:
                log.warning(
                    "%d submission(s) failed their re-scoring for these labels and stay on "
                    "their old results (their jobs say why); python -m worker --rescore tries "
                    "again",
                    failed,
                )
            new = []
            for submission in chosen:
                new.append(self._again(session, submission))
                if target is not None:
                    new[-1].rescore_label_set, new[-1].rescore_scorer = target, SCORER_VERSION
                session.add(new[-1])
        for job in new:
            self._enqueue(job.id)
        if new and target is not None:  # --rescore prints its own count
            log.info("queued %d submission(s) for re-scoring", len(new))
        return len(new)

    def watch_labels(self, interval_s: float = 30.0) -> None:
        """Re-score what another label set or an older scorer scored, when it may be."""
        seen = LabelStore.current_hash(self.settings.labels_dir)
        while not self.stop.wait(interval_s):
            now = LabelStore.current_hash(self.settings.labels_dir)
            try:
                if now == seen:
                    self.rescore_older_scorers()
                    continue
                log.info("the label set changed: re-scoring what was scored against the old one")
                self.rescore_stale()
                seen = now
            except Exception:  # a lost database: logged, tried again
                log.exception("re-scoring")


def _failed_left(session, submission_ids, target: str, open_jobs) -> int:
    """How many of ``submission_ids`` have no open job and a failed re-scoring for ``target``."""
    return session.scalar(
        select(func.count(Submission.id)).where(
            Submission.id.in_(submission_ids),
            Submission.id.in_(failed_for(target)),
            ~Submission.id.in_(open_jobs),
        )
    )


def failed_for(target: str):
    """Submissions whose re-scoring for ``target`` failed since their current results.

    ``target`` is a label-set hash, with this worker's scorer; queuing those again would only
    fail again. A cancelled re-scoring is not one (its owner may cancel a queued job), nor one that
    finished: results written since (labels changed back, a host with other labels) make a
    new re-scoring for the same target right.
    """
    current_job = (
        select(func.max(Result.job_id))
        .where(Result.submission_id == Job.submission_id, Result.current.is_(True))
        .scalar_subquery()
    )
    return select(Job.submission_id).where(
        Job.status == JobStatus.FAILED,
        Job.rescore_label_set == target,
        Job.rescore_scorer == SCORER_VERSION,
        Job.id > func.coalesce(current_job, 0),
    )


def older_scorer(version: str, than: str = SCORER_VERSION) -> bool:
    """Whether scorer ``version`` precedes ``than``, as dotted numbers ("1.0" equals "1").

    A version that is not dotted numbers is never older: it is not ours to judge.

    Example:
        >>> older_scorer("0.9", "1.0"), older_scorer("1.0.0", "1"), older_scorer("1.0rc1", "2")
        (True, False, False)
    """

    def numbers(text: str) -> tuple[int, ...]:
        parts = [int(part) for part in text.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    try:
        return numbers(version) < numbers(than)
    except ValueError:
        return False


def _content_digest(zipped: bytes | Path, max_bytes: int) -> str:
    """A checkpoint's content digest: its copies in other zips are the same submission."""
    with CheckpointFiles.open(zipped, max_bytes=max_bytes) as files:
        return files.verify()
