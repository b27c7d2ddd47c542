"""The worker itself: claims jobs from its lanes, runs them, writes results, reports health."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from evaluation.bundle import LabelStore, PublicBundle
from evaluation.errors import EvaluationError, InvalidLabelStore, ModelRunFailed
from evaluation.prediction_file import read_predictions
from evaluation.run_checkpoint import as_predictions, model_memory, predict_splits
from evaluation.scoring import SCORER_VERSION, score_predictions
from evaluation.splits import TEST_SPLITS, get_split
from fileio import atomic_write, write_predictions
from leaderboard.board import build_board, last_updated
from leaderboard.hub import start_hub_sync, write_folder
from leaderboard.publication import release
from leaderboard.standings import update_standing
from models.archive import CheckpointFiles
from models.checkpoint import checkpoint_from_files
from models.errors import ModelError
from models.predictor import Predictor
from settings import REPO_ROOT, Settings
from store.engine import open_store
from store.locks import lock_account
from store.schema import PUBLIC_ONLY, Job, Result, Submission
from store.shared_values import store_id
from submissions import jobs, worker_registry
from submissions.errors import SubmissionError
from submissions.queue import EvaluationQueue
from submissions.requests import request_rows
from worker.efficiency import device_name, record_efficiency
from worker.maintenance import Maintenance
from worker.reasons import public_reason
from worker.supervisor import InteractiveSignal

log = logging.getLogger("worker")
LABEL_STORE_REFUSED = (
    "the server's label store failed its check, so this job could not be scored (the worker's "
    "log tells the maintainers); it does not count against any quota"
)
PROGRESS_LOG_S = 15.0  # a running checkpoint job logs its progress this often
FOREIGN_LOG_S = 60.0  # another store's messages are logged this often (the reaper resends)


class Worker:
    """Runs evaluation jobs."""

    def __init__(self, settings: Settings, lanes: tuple[str, ...] | None = None) -> None:
        self.settings = settings
        self.sessions: sessionmaker = open_store(settings.database_url)
        self.lanes = lanes or default_lanes()
        self.queue = EvaluationQueue(
            settings, store_id(self.sessions), handler=self.run_job, lanes=self.lanes
        )
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.splits = [s.name for s in TEST_SPLITS]
        self.hub = start_hub_sync(settings)  # None unless a results repo and token are set
        self.interactive = InteractiveSignal(settings.data_dir)
        self.stop = threading.Event()
        self.maintenance = Maintenance(settings, self.sessions, self.queue, self.stop)
        self._running: list[int] = []  # jobs running now, one per lane at most
        self._state = threading.Lock()
        self._exporting = threading.Lock()
        self._exported_version = None  # the board's last_updated when the folder was written
        self._foreign_logged = -FOREIGN_LOG_S  # when a message of another store was last logged

    def _foreign_message(self, job_id: int, sender: str) -> None:
        """Say, at most once a minute, that the queue holds another store's messages."""
        if time.monotonic() - self._foreign_logged < FOREIGN_LOG_S:
            return
        self._foreign_logged = time.monotonic()
        log.error(
            "The queue (MITOSIS_QUEUE_URL) holds a message for job %d of store %s, and this "
            "worker's database is store %s: dropped, not run. A host on this queue (this one or "
            "the sender) has another MITOSIS_DATABASE_URL, or the message is left from a store "
            "that was replaced.",
            job_id,
            sender,
            self.queue.store_id,
        )

    def _report(self, job_id: int, running: bool) -> None:
        """Tell the store which job this worker runs now (the latest started of its lanes)."""
        with self._state:
            if running:
                self._running.append(job_id)
            else:
                self._running.remove(job_id)
            current = self._running[-1] if self._running else None
        worker_registry.beat(
            self.sessions, self.name, state="running" if current else "idle", job_id=current
        )

    def run_job(self, job_id: int, sender: str | None = None) -> None:
        """Claim, run and close one job; a job that is not queued any more is skipped.

        A message of another store (``sender``, its store id; None in messages from before
        they named it) is dropped: its job is not this worker's job of that number.
        """
        if sender is not None and sender != self.queue.store_id:
            self._foreign_message(job_id, sender)
            return
        token = jobs.claim(self.sessions, job_id, self.name, self.settings.lease_s)
        if token is None:
            return
        self._report(job_id, running=True)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, token, stop), daemon=True)
        beat.start()
        started, paused = time.monotonic(), [0.0]  # paused: seconds the Space's users had
        kind = ""
        try:
            with self.sessions() as session:
                job = session.get(Job, job_id)
                submission, scope, counted = job.submission, job.scope, job.counts_toward_quota
            kind = submission.kind if counted else ""  # re-scorings cost their submitter nothing
            # read for every job: a rebuilt release or label store takes effect at once
            bundle = PublicBundle(self.settings.public_dir)
            labels = LabelStore(self.settings.labels_dir)
            predictions = self._predictions(submission, bundle, job_id, token, paused)
            truth = labels.all_labels()
            if scope == PUBLIC_ONLY:  # spends no hidden scoring: the hidden labels stay unread
                truth = {s: t for s, t in truth.items() if not get_split(s).hidden}
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
                charged_s=self._charge(kind, started, paused[0]),
            )
            log.info("job %d %s", job_id, "finished" if written else "lost its lease: dropped")
            if written and scope != PUBLIC_ONLY:  # a public-split check leaves the standing
                self.update_standing(truth, labels.label_set_hash)
        except ModelRunFailed as e:  # the time limit, memory, outputs: the model's own doing
            charged = self._charge(kind, started, paused[0])
            jobs.fail(self.sessions, job_id, token, self._reason(e), charged_s=charged)
            log.info("job %d failed: %s", job_id, e, exc_info=e.__cause__)  # the evidence
        except InvalidLabelStore as e:  # the maintainers' to fix; its details are theirs
            log.error("job %d failed: %s", job_id, e)
            jobs.fail(self.sessions, job_id, token, LABEL_STORE_REFUSED)
        except (EvaluationError, ModelError, SubmissionError) as e:
            jobs.fail(self.sessions, job_id, token, self._reason(e))
            log.info("job %d failed: %s", job_id, e)
        except Exception:  # the server's fault, not the submitter's: nothing is charged
            log.exception("job %d: internal error", job_id)
            jobs.fail(self.sessions, job_id, token, "internal error")
        finally:
            stop.set()
            self._report(job_id, running=False)
            self.export_results()

    def _reason(self, error: Exception) -> str:
        settings = self.settings
        roots = (settings.data_dir, settings.cache_dir, settings.labels_dir, REPO_ROOT)
        return public_reason(error, (*roots, Path(tempfile.gettempdir())))

    @staticmethod
    def _charge(kind: str, started: float, paused: float) -> float:
        """Run time charged to the submitter's compute allowance (checkpoints only).

        The seconds the worker paused for the Space's users are not the model's.
        """
        elapsed = time.monotonic() - started - paused
        return round(max(0.0, elapsed), 3) if kind == "checkpoint" else 0.0

    def _heartbeat(self, job_id: int, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.settings.lease_s / 3):
            if not jobs.heartbeat(self.sessions, job_id, token, self.settings.lease_s):
                return

    def _predictions(
        self,
        submission: Submission,
        bundle: PublicBundle,
        job_id: int,
        token: str,
        paused: list[float],
    ):
        """The submission's predictions; pauses for the Space's users add to ``paused[0]``."""
        path = self.settings.data_dir / submission.path
        if submission.kind == "predictions":
            return read_predictions(
                path, bundle.manifest, max_bytes=self.settings.max_prediction_file_bytes
            )
        cached = self.settings.data_dir / "predictions" / f"{submission.sha256}.csv"
        try:
            stored = pd.read_csv(cached, dtype={"image_id": str})
            if set(bundle.manifest["image_id"]) <= set(stored["image_id"]):
                return as_predictions(stored)
        except (OSError, ValueError, KeyError):  # not there yet, or unreadable: run the model
            pass  # and a rebuilt release with other crops runs it again too
        with CheckpointFiles.open(path, max_bytes=self.settings.max_checkpoint_bytes) as files:
            with model_memory():
                checkpoint = checkpoint_from_files(files)

        logged = [time.monotonic()]

        def before_chunk(done: int, total: int) -> float:
            jobs.progress(self.sessions, job_id, token, done, total)
            if time.monotonic() - logged[0] >= PROGRESS_LOG_S:  # the log sees it run too
                log.info("job %d: %d of %d crops", job_id, done, total)
                logged[0] = time.monotonic()
            waited = self.interactive.wait_while_busy()  # a user of the Space goes first
            paused[0] += waited
            return waited

        started = time.monotonic()
        with model_memory():
            predictor = Predictor(checkpoint, device="auto")
        frame = predict_splits(
            predictor,
            bundle,
            self.splits,
            cache_dir=self.settings.cache_dir,
            deadline=started + self.settings.job_time_limit_s,
            before_chunk=before_chunk,
            memory_budget=self.settings.batch_memory_bytes,
        )
        with self.sessions() as session:
            flops = session.get(Job, job_id).flops_per_crop
        if flops:
            seconds = time.monotonic() - started
            worker_registry.record_speed(
                self.sessions, self.name, flops * len(frame) / seconds / 1e9
            )
        atomic_write(cached, lambda tmp: write_predictions(frame, tmp))
        paused[0] += record_efficiency(
            self.sessions, submission.id, predictor, bundle, self.interactive
        )
        return as_predictions(pd.read_csv(cached, dtype={"image_id": str}))

    def _write_results(self, session, job, predictions, scores, truth, label_hash) -> None:
        """The new current results of the job's submission (older ones stay, not current)."""
        lock_account(session, job.submission.user)  # first: the order every decision takes
        session.execute(
            update(Result)
            .where(
                Result.submission_id == job.submission_id,
                Result.current.is_(True),
                Result.split.in_(list(scores)),  # a public-split check keeps hidden results
            )
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
                    curves=s.curves,
                    scorer_version=SCORER_VERSION,
                    label_set_hash=label_hash,
                    versions=versions,
                )
            )
        release(session, job, rows, self.settings)
        session.add_all(rows)

    def update_standing(self, truth=None, label_set_hash: str | None = None) -> None:
        """Recompute the rank standing from the tested entries (``leaderboard.standings``).

        Never fails a job: a job's results are written before this runs, and the next
        scoring or worker start computes the standing again.
        """
        try:
            if truth is None:
                labels = LabelStore.if_present(self.settings.labels_dir)
                if labels is None:
                    return
                truth, label_set_hash = labels.all_labels(), labels.label_set_hash
            update_standing(
                self.sessions,
                truth,
                label_set_hash=label_set_hash,
                n_resamples=self.settings.bootstrap_resamples,
            )
        except Exception:
            log.exception("rank standing")

    def export_results(self) -> None:
        """Rewrite the results dataset folder (``leaderboard.hub``), which the Hub sync commits.

        Never fails a job: the next job or worker start writes the folder again.
        """
        try:
            with self._exporting:  # the lanes' threads finish jobs concurrently
                self._exported_version = last_updated(self.sessions)
                entries = build_board(self.sessions)
                with self.sessions() as session:
                    requests = request_rows(session, {e.submission_id for e in entries})
                if self.hub:
                    self.hub.write(entries, requests)
                else:
                    write_folder(self.settings.results_dataset_dir, entries, requests)
        except Exception:
            log.exception("results dataset")

    def export_if_changed(self) -> bool:
        """Rewrite the results folder if the board changed without a job (a withdrawal...)."""
        if last_updated(self.sessions) == self._exported_version:
            return False
        self.update_standing()  # the tested entries may have changed
        self.export_results()
        return True

    def _beat_forever(self) -> None:
        while not self.stop.wait(worker_registry.HEARTBEAT_S):
            try:
                worker_registry.beat(self.sessions, self.name)
                self.export_if_changed()
            except Exception:
                log.exception("worker heartbeat")

    def run(self) -> None:
        """Register, seed, start the heartbeat and the reaper, consume the queue until stopped."""
        worker_registry.register(
            self.sessions,
            self.name,
            socket.gethostname(),
            os.getpid(),
            device_name(),
            threads=torch.get_num_threads(),
            lanes=self.lanes,
            scorer_version=SCORER_VERSION,
        )
        log.info(
            "worker %s on %s serves the %s lane(s)", self.name, device_name(), ", ".join(self.lanes)
        )
        self.maintenance.seed()
        self.maintenance.rescore_stale()
        self.update_standing()
        self.export_results()
        threading.Thread(target=self._beat_forever, daemon=True).start()
        threading.Thread(target=self.maintenance.watch_labels, daemon=True).start()
        threading.Thread(target=self.maintenance.record_content_digests, daemon=True).start()
        threading.Thread(
            target=jobs.reap_forever, args=(self.sessions, self.queue, self.stop), daemon=True
        ).start()
        consumers = [
            huey.create_consumer(
                workers=1, initial_delay=0.02, backoff=1.1, max_delay=0.1, check_worker_health=False
            )
            for huey in self.queue.lanes.values()
        ]
        for consumer in consumers[:-1]:  # each lane has its own consumer thread
            consumer.start()
        try:
            consumers[-1].run()
        finally:
            self.stop.set()
            worker_registry.beat(self.sessions, self.name, state="stopped", job_id=None)


def default_lanes() -> tuple[str, ...]:
    """Every lane on a GPU host; the files and CPU model lanes elsewhere."""
    return ("files", "models", "gpu") if torch.cuda.is_available() else ("files", "models")
