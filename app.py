"""The Space: classify, leaderboard, submit, about. Layout only; the work lives in the packages.

Run ``python app.py``; it listens on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (see settings.py),
runs the reaper and starts a supervised evaluation worker unless MITOSIS_START_WORKER=0. Each
tab is built in ``ui/`` (Gradio-only modules); its handlers call the packages.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
from pathlib import Path

import gradio as gr

from leaderboard.hub import HubSyncError, check_hub_sync
from models.batching import BATCHER
from settings import Settings, command_settings, configure_logging
from store.clock import check_clock
from store.engine import open_store
from store.errors import StoreUnavailable
from submissions import jobs
from submissions.errors import QueueUnavailable
from submissions.intake import Submissions
from ui.classify_tab import classify_tab
from ui.components import SpaceBlocks
from ui.leaderboard_tab import BOARD_CSS, leaderboard_api, leaderboard_tab
from ui.space import Space
from ui.submit_tab import submit_tab
from worker.supervisor import WorkerSupervisor

NOTICE = (
    "**Research use only, not for diagnosis.** Atypical vs normal mitotic figure "
    "classification on the AMi-Br benchmark (Banerjee et al., arXiv 2506.21444)."
)
ABOUT = Path(__file__).parent / "ABOUT.md"
# Gradio's cache: every 10 minutes, files uploaded more than 30 minutes ago and never submitted
# go (a submission removes its upload at once; the Classify examples are kept)
UPLOAD_RETENTION = (600, 1800)


def build_demo(settings: Settings) -> gr.Blocks:
    """The Gradio app for ``settings``; nothing is loaded until a handler runs."""
    space = Space(settings)
    with SpaceBlocks(title="Atypical mitosis benchmark", delete_cache=UPLOAD_RETENTION) as demo:
        gr.Markdown(f"# Atypical vs normal mitosis\n{NOTICE}")
        classify_tab(demo, space)
        leaderboard_tab(demo, space)
        submit_tab(demo, space, settings)
        with gr.Tab("About"):
            gr.Markdown(ABOUT.read_text() if ABOUT.is_file() else "")
        leaderboard_api(space)
    return demo


def launch_kwargs(settings: Settings) -> dict:
    """Safety settings of the server; only the public downloads are served from disk."""
    allowed = [str(settings.public_dir / n) for n in ("test_crops.zip", "predictions_template.csv")]
    return {
        "server_name": settings.server_name,
        "server_port": settings.server_port,
        "max_file_size": settings.max_checkpoint_bytes,
        "enable_monitoring": False,
        "run_history": False,
        "allowed_paths": [*allowed, str(settings.public_dir / "test_crops")],
        "blocked_paths": [str(settings.labels_dir), str(settings.data_dir / "uploads")],
        "footer_links": ["api"],
        "css": BOARD_CSS,
    }


def start_backend(settings: Settings) -> WorkerSupervisor | None:
    """The reaper, and (unless MITOSIS_START_WORKER=0) a supervised worker, beside the app.

    The reaper runs here too, so a job whose worker died goes back to the queue even while no
    worker is alive.
    """
    submissions = Submissions(settings, open_store(settings.database_url))
    submissions.queue.check()
    check_clock(submissions.sessions)
    if settings.start_worker:  # a setting the worker would stop at: said once, not in a loop
        check_hub_sync(settings)
    stop = threading.Event()
    threading.Thread(
        target=jobs.reap_forever,
        args=(submissions.sessions, submissions.queue, stop),
        name="reaper",
        daemon=True,
    ).start()
    atexit.register(stop.set)
    supervisor = WorkerSupervisor().start() if settings.start_worker else None
    if supervisor:
        atexit.register(supervisor.stop)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that atexit runs
    return supervisor


if __name__ == "__main__":
    app_settings = command_settings("app.py")
    configure_logging(app_settings)
    try:  # a database or queue it cannot use: one sentence, before anything serves
        start_backend(app_settings)
    except (StoreUnavailable, QueueUnavailable, HubSyncError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    BATCHER.will_serve()  # the networks run in this (main) thread: see models/batching.py
    build_demo(app_settings).launch(prevent_thread_lock=True, **launch_kwargs(app_settings))
    BATCHER.serve()
