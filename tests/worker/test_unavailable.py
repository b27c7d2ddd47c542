"""A database, queue or label store that cannot be used is one sentence with what to check,
and the app and the worker stop with it (exit 2) instead of a traceback, or one every second."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app import start_backend
from leaderboard.hub import HubSyncError
from settings import REPO_ROOT, Settings
from store.engine import open_store
from store.entry import EntryMetadata
from store.errors import StoreUnavailable
from submissions.errors import QueueUnavailable
from submissions.queue import EvaluationQueue
from tests.backend import Backend
from tests.servers import free_port
from worker.__main__ import main as worker_main
from worker.runner import LABEL_STORE_REFUSED


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "MITOSIS_DATABASE_URL is not a database URL. Use sqlite:////"),
        (
            "postgres://me:secret@db/x",
            "names a database SQLAlchemy does not know: postgres://me:***@db/x. Use",
        ),
        ("mysql://me@db/x", "The database driver of mysql://me@db/x is not installed"),
        (
            "postgresql+psycopg://me:secret@127.0.0.1:{port}/x",
            "Cannot open the database at postgresql+psycopg://me:***@127.0.0.1:{port}/x: "
            "connection failed",
        ),
        (
            "sqlite:///{tmp}/no/such/folder/x.db",
            "the folder {tmp}/no/such/folder does not exist. The default database lives in "
            "MITOSIS_DATA_DIR, which `python -m evaluation.release` creates",
        ),
        (
            "sqlite:////proc/x.db",  # a folder no one may write in, even root
            "unable to open database file. Check that its folder exists and is writable",
        ),
    ],
)
def test_a_database_that_cannot_be_opened_is_a_sentence(url, message, tmp_path):
    port = free_port()  # nothing listens there
    url, message = (s.format(port=port, tmp=tmp_path) for s in (url, message))
    with pytest.raises(StoreUnavailable) as refused:
        open_store(url)
    assert message in str(refused.value) and "secret" not in str(refused.value)


def test_a_queue_server_that_does_not_answer_is_a_sentence(tmp_path):
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    queue = EvaluationQueue(Settings.from_env({"MITOSIS_QUEUE_URL": url}), None)
    with pytest.raises(QueueUnavailable) as refused:
        queue.check()
    message = str(refused.value)
    assert message.startswith("Cannot reach the queue at redis://:***@127.0.0.1:")
    assert ". Check that Redis is running there" in message and "secret" not in message
    EvaluationQueue(Settings.from_env({"MITOSIS_DATA_DIR": str(tmp_path)}), None).check()


UNUSABLE = [  # what a maintainer may get wrong: (command, variable, value, the sentence)
    (["app.py"], "MITOSIS_DATABASE_URL", "nonsense", "is not a database URL"),
    (["-m", "worker"], "MITOSIS_QUEUE_URL", "redis://127.0.0.1:{port}/0", "Cannot reach"),
    (["-m", "worker", "--rescore"], "MITOSIS_LABELS_DIR", "{tmp}/labels", "hash to 7b70beb1"),
    (["-m", "worker"], "MITOSIS_HUB_RESULTS_REPO", "org/results", "HF_HUB_OFFLINE is set"),
]


def unusable_environment(variable: str, value: str, tmp_path) -> dict[str, str]:
    labels = tmp_path / "labels"  # a label store edited after its release was built
    labels.mkdir()
    (labels / "labels.csv").write_text("image_id,split,label\na,atnorm_br,normal\n")
    (labels / "release.json").write_text('{"label_set_hash": "%s"}' % ("0" * 64))
    return {
        "MITOSIS_DATA_DIR": str(tmp_path),
        variable: value.format(port=free_port(), tmp=tmp_path),
        "GRADIO_SERVER_PORT": str(free_port()),
        "HF_TOKEN": "hf_unused",  # the Hub sync needs one to be configured
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.slow  # two processes: the app's and the worker's own way out, end to end
@pytest.mark.parametrize(("command", "variable", "value", "message"), UNUSABLE[:2])
def test_the_app_and_the_worker_stop_with_the_sentence(command, variable, value, message, tmp_path):
    done = subprocess.run(
        [sys.executable, *command],
        cwd=REPO_ROOT,
        env={**os.environ, **unusable_environment(variable, value, tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,  # a regression that starts serving fails here instead of hanging the run
    )
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error: ") == 1


@pytest.mark.parametrize(("command", "variable", "value", "message"), UNUSABLE[2:])
def test_the_worker_stops_with_the_sentence(
    command, variable, value, message, tmp_path, monkeypatch, capsys
):
    """The other causes through ``python -m worker``'s own entry point, in this process."""
    for name, setting in unusable_environment(variable, value, tmp_path).items():
        monkeypatch.setenv(name, setting)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert worker_main(command[2:]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and stderr.count("error: ") == 1


def test_a_worker_without_a_release_and_an_app_whose_sync_cannot_run_say_so(
    tmp_path, monkeypatch, capsys
):
    """In this process, through the same entry points as the commands above (cheaper)."""
    monkeypatch.setenv("MITOSIS_DATA_DIR", str(tmp_path))
    assert worker_main([]) == 2
    assert capsys.readouterr().err.startswith("error: No benchmark release at")
    monkeypatch.setenv("MITOSIS_HUB_RESULTS_REPO", "org/results")
    monkeypatch.setenv("HF_TOKEN", "hf_unused")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(HubSyncError, match="HF_HUB_OFFLINE is set"):
        start_backend(Settings.from_env())  # app.py prints it as its one error line


@pytest.mark.slow  # a worker process
def test_a_serving_worker_with_an_edited_label_store_says_so_to_its_submitters(tmp_path):
    backend = Backend(tmp_path)
    labels_csv = backend.settings.labels_dir / "labels.csv"
    labels_csv.write_text(labels_csv.read_text().replace(",atypical,", ",normal,", 1))
    worker = backend.start_worker()
    view = backend.service.submit_predictions("alice", backend.predictions(1), EntryMetadata("m"))
    failed = backend.wait("alice", view.job_id)
    assert (failed.status, failed.reason) == ("failed", LABEL_STORE_REFUSED)
    assert worker.poll() is None  # still serving
    log = (backend.settings.data_dir / "worker0.log").read_text()
    assert "that its release.json states: labels.csv changed after the release was built" in log
