"""``python -m evaluation.worker``: an evaluation worker.

It is the one place that joins the queue, the store and the scorer.

It consumes job ids from the queue (Huey), claims each job with a lease it renews while it
works, reads the prediction file or runs the checkpoint (CUDA when present, under a time limit),
scores every test split and writes the results and the job's end in one transaction, together
with what the release policy (``evaluation.disclosure``) lets anyone read: the Ladder's decision
is taken under the submitter's account lock, so concurrent workers decide one at a time. A
reaper thread re-enqueues jobs whose worker died and queued jobs whose message was lost. Typed
errors fail a job with their message; anything else fails it with "internal error" and a logged
traceback. The worker registers itself and sends a heartbeat (device, state, current job) that
the Space shows; started by ``app.py`` (``MITOSIS_PARENT_PID`` set), it exits when the app is
gone. ``--rescore`` queues a new job for every stored submission (history is kept).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pandas as pd
import torch
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from evaluation.bundle import LabelStore, PublicBundle
from evaluation.checkpoint import as_predictions, predict_splits
from evaluation.errors import EvaluationError, TimeLimitExceeded
from evaluation.scoring import SCORER_VERSION, Predictions, read_predictions, score_predictions
from evaluation.splits import TEST_SPLITS
from fileio import atomic_write, zip_folder
from leaderboard.board import build_board
from leaderboard.hub import start_hub_sync
from leaderboard.paper import seed_paper_rows
from leaderboard.publication import release, release_pending
from leaderboard.results import Result
from models.archive import CheckpointFiles
from models.checkpoint import checkpoint_from_files
from models.errors import ModelError
from models.predictor import Predictor
from settings import Settings
from submissions import jobs, workers
from submissions.errors import SubmissionError
from submissions.metadata import checkpoint_entry
from submissions.queue import EvaluationQueue
from submissions.quota import lock_account
from submissions.storage import sha256, store_file, stored_path
from submissions.tables import Job, JobStatus, Submission, open_store

log = logging.getLogger("evaluation.worker")
RESCORE_LOCK = "(re-scoring)"  # an account name no Hugging Face user can have


class Worker:
    """Runs evaluation jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: sessionmaker = open_store(settings.database_url)
        self.queue = EvaluationQueue(settings, handler=self.run_job)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.splits = [s.name for s in TEST_SPLITS]
        self.hub = start_hub_sync(settings)  # None unless a results repo and token are set
        self.stop = threading.Event()

    def run_job(self, job_id: int) -> None:
        """Claim, run and close one job; a job that is not queued any more is skipped."""
        token = jobs.claim(self.sessions, job_id, self.name, self.settings.lease_s)
        if token is None:
            return
        workers.beat(self.sessions, self.name, state="running", job_id=job_id)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, token, stop), daemon=True)
        beat.start()
        started = time.monotonic()
        kind = ""
        try:
            with self.sessions() as session:
                submission = session.get(Job, job_id).submission
            kind = submission.kind
            # read for every job: a rebuilt release or label store takes effect at once
            bundle = PublicBundle(self.settings.public_dir)
            labels = LabelStore(self.settings.labels_dir)
            predictions = self._predictions(submission, bundle)
            truth = labels.all_labels()
            scores = score_predictions(
                predictions, truth, n_resamples=self.settings.bootstrap_resamples
            )
            written = jobs.finish(
                self.sessions,
                job_id,
                token,
                lambda session, job: self._write_results(
                    session, job, predictions, scores, truth, labels.label_set_hash
                ),
                charged_s=self._charge(kind, started),
            )
            log.info("job %d %s", job_id, "finished" if written else "lost its lease: dropped")
            if written and self.hub:
                self.hub.write(build_board(self.sessions))
        except TimeLimitExceeded as e:
            jobs.fail(self.sessions, job_id, token, str(e), charged_s=self._charge(kind, started))
            log.info("job %d failed: %s", job_id, e)
        except (EvaluationError, ModelError, SubmissionError) as e:
            jobs.fail(self.sessions, job_id, token, str(e))
            log.info("job %d failed: %s", job_id, e)
        except Exception:
            log.exception("job %d: internal error", job_id)
            jobs.fail(self.sessions, job_id, token, "internal error")
        finally:
            stop.set()
            workers.beat(self.sessions, self.name, state="idle", job_id=None)

    @staticmethod
    def _charge(kind: str, started: float) -> float:
        """Run time charged to the submitter's compute allowance (checkpoints only)."""
        return round(time.monotonic() - started, 3) if kind == "checkpoint" else 0.0

    def _heartbeat(self, job_id: int, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.settings.lease_s / 3):
            if not jobs.heartbeat(self.sessions, job_id, token, self.settings.lease_s):
                return

    def _predictions(self, submission: Submission, bundle: PublicBundle) -> Predictions:
        path = self.settings.data_dir / submission.path
        if submission.kind == "predictions":
            return read_predictions(
                path, bundle.manifest, max_bytes=self.settings.max_prediction_file_bytes
            )
        cached = self.settings.data_dir / "predictions" / f"{submission.sha256}.csv"
        try:
            return as_predictions(pd.read_csv(cached, dtype={"image_id": str}))
        except (OSError, ValueError, KeyError):  # not there yet, or unreadable: run the model
            pass
        with CheckpointFiles.open(path, max_bytes=self.settings.max_checkpoint_bytes) as files:
            checkpoint = checkpoint_from_files(files)
        frame = predict_splits(
            Predictor(checkpoint, device="auto"),
            bundle,
            self.splits,
            cache_dir=self.settings.data_dir / "cache",
            deadline=time.monotonic() + self.settings.job_time_limit_s,
        )
        atomic_write(cached, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6f"))
        return as_predictions(pd.read_csv(cached, dtype={"image_id": str}))

    def _write_results(self, session, job, predictions, scores, truth, label_hash) -> None:
        """The new current results of the job's submission (older ones stay, not current)."""
        session.execute(
            update(Result)
            .where(Result.submission_id == job.submission_id, Result.current.is_(True))
            .values(current=False)
        )
        position = pd.Index(predictions.image_ids)
        versions = f"torch {torch.__version__}, numpy {np.__version__}"
        rows = []
        for split, s in scores.items():
            # decisions in sorted-id order
            ids = np.sort(truth[split].image_ids)
            decided = predictions.predicted[position.get_indexer(ids)]
            ba, auc, c = s.balanced_accuracy, s.auroc, s.confusion
            rows.append(
                Result(
                    job_id=job.id,
                    submission_id=job.submission_id,
                    split=split,
                    n=s.n,
                    n_atypical=s.n_atypical,
                    ba=ba.estimate,
                    ba_low=ba.low,
                    ba_high=ba.high,
                    sensitivity=s.sensitivity,
                    specificity=s.specificity,
                    auroc=auc.estimate,
                    auroc_low=auc.low,
                    auroc_high=auc.high,
                    average_precision=s.average_precision,
                    brier=s.brier,
                    ece=s.ece,
                    tp=c.tp,
                    fn=c.fn,
                    tn=c.tn,
                    fp=c.fp,
                    decisions=np.packbits(decided.astype(bool)).tobytes(),
                    scorer_version=SCORER_VERSION,
                    label_set_hash=label_hash,
                    versions=versions,
                )
            )
        release(session, job, rows)
        session.add_all(rows)

    def _beat_forever(self) -> None:
        while not self.stop.wait(workers.HEARTBEAT_S):
            try:
                workers.beat(self.sessions, self.name)
            except Exception:
                log.exception("worker heartbeat")

    def seed(self) -> None:
        """The paper's rows and the shipped model, once per database.

        The shipped model is queued again when its last job failed (say, the worker started
        before the release was built).
        """
        seed_paper_rows(self.sessions)
        release_pending(self.sessions)
        data = zip_folder(self.settings.default_checkpoint)
        digest = sha256(data)
        try:
            job_id = self._seed_default_model(data, digest)
        except IntegrityError:  # another worker seeded it at the same moment
            return
        if job_id is not None:
            self.queue.enqueue(job_id)

    def _seed_default_model(self, data: bytes, digest: str) -> int | None:
        with self.sessions.begin() as session:
            existing = session.scalar(select(Submission).where(Submission.sha256 == digest))
            if existing is not None:
                if existing.jobs and existing.jobs[-1].status not in (
                    JobStatus.FAILED,
                    JobStatus.CANCELLED,
                ):
                    return None
                job = Job(submission=existing, status=JobStatus.QUEUED, counts_toward_quota=False)
                session.add(job)
                session.flush()
                return job.id
            uploads = self.settings.data_dir / "uploads"
            store_file(uploads, data, digest, ".zip")
            submission = Submission(
                sha256=digest,
                kind="checkpoint",
                user="maintainers",
                meta=checkpoint_entry(self.settings.default_checkpoint).to_dict(),
                path=str(stored_path(uploads, digest, ".zip").relative_to(self.settings.data_dir)),
                size_bytes=len(data),
            )
            job = Job(submission=submission, status=JobStatus.QUEUED, counts_toward_quota=False)
            session.add_all([submission, job])
            session.flush()
            return job.id

    def rescore_all(self) -> int:
        """A new job for every stored submission; their old results stay as history."""
        return self._rescore(select(Submission.id).where(Submission.kind != "paper"))

    def rescore_stale(self) -> int:
        """A new job for every submission scored against other labels than the store's now.

        Runs at start and whenever the label-set hash changes (a maintainer rebuilt the label
        store), so the board never mixes label sets; submissions with a job already queued or
        running are left to it.
        """
        current = LabelStore.current_hash(self.settings.labels_dir)
        if current is None:
            return 0
        stale = (
            select(Result.submission_id)
            .where(
                Result.current.is_(True),
                Result.job_id.is_not(None),
                Result.label_set_hash != current,
            )
            .distinct()
        )
        return self._rescore(stale)

    def _rescore(self, submission_ids) -> int:
        with self.sessions.begin() as session:
            lock_account(session, RESCORE_LOCK)  # one worker at a time decides what to queue
            busy = select(Job.submission_id).where(
                Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
            )
            chosen = session.scalars(
                select(Submission).where(
                    Submission.id.in_(submission_ids), ~Submission.id.in_(busy)
                )
            ).all()
            new = [
                Job(submission=s, status=JobStatus.QUEUED, counts_toward_quota=False)
                for s in chosen
            ]
            session.add_all(new)
        for job in new:
            self.queue.enqueue(job.id)
        if new:
            log.info("queued %d submission(s) for re-scoring", len(new))
        return len(new)

    def _watch_labels(self, interval_s: float = 30.0) -> None:
        seen = LabelStore.current_hash(self.settings.labels_dir)
        while not self.stop.wait(interval_s):
            now = LabelStore.current_hash(self.settings.labels_dir)
            if now != seen:
                log.info("the label set changed: re-scoring what was scored against the old one")
                self.rescore_stale()
                seen = now

    def run(self) -> None:
        """Register, seed, start the heartbeat and the reaper, consume the queue until stopped."""
        workers.register(self.sessions, self.name, socket.gethostname(), os.getpid(), _device())
        self.seed()
        self.rescore_stale()
        threading.Thread(target=self._beat_forever, daemon=True).start()
        threading.Thread(target=self._watch_labels, daemon=True).start()
        threading.Thread(
            target=jobs.reap_forever, args=(self.sessions, self.queue, self.stop), daemon=True
        ).start()
        consumer = self.queue.huey.create_consumer(
            workers=1, initial_delay=0.02, backoff=1.1, max_delay=0.1, check_worker_health=False
        )
        try:
            consumer.run()
        finally:
            self.stop.set()
            workers.beat(self.sessions, self.name, state="stopped", job_id=None)


def _device() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def follow_parent(parent: int) -> None:
    """Die with the app that started this worker, however the app ends.

    On Linux the kernel sends SIGKILL when the parent goes (``PR_SET_PDEATHSIG``); a thread
    that watches the parent pid covers the moment before that call and other systems.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    log.warning("the app that started this worker (pid %d) is gone: exiting", parent)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rescore", action="store_true", help="queue every stored submission again, then exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parent = os.environ.get("MITOSIS_PARENT_PID", "")
    if parent.isdigit():
        follow_parent(int(parent))
    worker = Worker(Settings.from_env())
    if args.rescore:
        print(f"queued {worker.rescore_all()} submissions for re-scoring")
        return 0
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
