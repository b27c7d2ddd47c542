"""The Space: wiring only; the work lives in the packages.

Run ``python app.py``; it listens on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (see settings.py).
"""

from __future__ import annotations

import atexit
import logging
import signal
import subprocess
import sys

import gradio as gr
import pandas as pd

from evaluation.bundle import PublicBundle
from evaluation.errors import EvaluationError
from evaluation.scoring import load_labels, read_predictions, score_predictions
from evaluation.splits import AMIBR_TEST
from settings import Settings

log = logging.getLogger(__name__)

NOTICE = (
    "**Research use only, not for diagnosis.** Atypical vs normal mitotic figure "
    "classification on the AMi-Br benchmark (Banerjee et al., arXiv 2506.21444)."
)


def score_public_split(settings: Settings, path: str | None) -> pd.DataFrame:
    """Score an uploaded prediction file on the public AMi-Br test split."""
    if not path:
        raise gr.Error("Upload a prediction file (image_id,prob_atypical[,label]) first.")
    try:
        bundle = PublicBundle(settings.public_dir)
        labels, _ = load_labels(bundle, settings.labels_dir, [AMIBR_TEST.name])
        predictions = read_predictions(
            path,
            bundle.manifest,
            splits=[AMIBR_TEST.name],
            max_bytes=settings.max_prediction_file_bytes,
        )
        score = score_predictions(predictions, labels, n_resamples=settings.bootstrap_resamples)[
            AMIBR_TEST.name
        ]
    except EvaluationError as e:
        raise gr.Error(str(e)) from e
    ba, auc = score.balanced_accuracy, score.auroc
    return pd.DataFrame(
        [
            {
                "split": AMIBR_TEST.title,
                "n": score.n,
                "balanced accuracy": f"{ba.estimate:.4f} [{ba.low:.4f}, {ba.high:.4f}]",
                "sensitivity": round(score.sensitivity, 4),
                "specificity": round(score.specificity, 4),
                "AUROC": f"{auc.estimate:.4f} [{auc.low:.4f}, {auc.high:.4f}]",
            }
        ]
    )


def build_demo(settings: Settings) -> gr.Blocks:
    """The Gradio app for ``settings``; nothing is loaded until a handler runs."""
    with gr.Blocks(title="Atypical mitosis benchmark", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# Atypical vs normal mitosis\n{NOTICE}")
        with gr.Tab("Score on AMi-Br test"):
            predictions_file = gr.File(label="Prediction file (CSV)", file_types=[".csv"])
            score_button = gr.Button("Score", variant="primary")
            score_table = gr.Dataframe(label="Scores with 95 % bootstrap CIs")
        score_button.click(
            lambda path: score_public_split(settings, path),
            predictions_file,
            score_table,
            api_visibility="private",
        )
    return demo


def start_worker() -> subprocess.Popen:
    """An evaluation worker process beside the app, stopped when the app exits."""
    worker = subprocess.Popen([sys.executable, "-m", "evaluation.worker"])
    atexit.register(worker.terminate)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that atexit runs
    return worker


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app_settings = Settings.from_env()
    if app_settings.start_worker:
        start_worker()
    build_demo(app_settings).launch(
        server_name=app_settings.server_name,
        server_port=app_settings.server_port,
        max_file_size=app_settings.max_prediction_file_bytes,
        enable_monitoring=False,
        run_history=False,
    )
