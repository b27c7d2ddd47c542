"""The Space: classify, leaderboard, submit, about. Wiring only; the work lives in the packages.

Run ``python app.py``; it listens on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (see settings.py)
and starts an evaluation worker process unless MITOSIS_START_WORKER=0.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

import gradio as gr
import pandas as pd

from evaluation.bundle import PublicBundle
from evaluation.errors import EvaluationError
from evaluation.supervisor import WorkerSupervisor
from leaderboard.board import build_board, verified_checkpoints
from leaderboard.export import board_rows, to_csv, to_json
from leaderboard.store import open_store
from leaderboard.tables import SOURCES, display_table, domain_plot_frame, entry_details
from models.errors import ModelError
from models.predictor import load_predictor
from settings import Settings
from submissions import jobs, workers
from submissions.errors import SubmissionError
from submissions.intake import Submissions, resolve_user
from submissions.metadata import METHOD_TYPES, EntryMetadata
from ui.components import CropImage, UploadFile, discard_upload

try:  # ZeroGPU hardware on a Space: the decorator attaches a GPU for each call
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn):
        return fn


log = logging.getLogger(__name__)
DEFAULT_MODEL = "Default model (shipped)"
NOTICE = (
    "**Research use only, not for diagnosis.** Atypical vs normal mitotic figure "
    "classification on the AMi-Br benchmark (Banerjee et al., arXiv 2506.21444)."
)
ABOUT = Path(__file__).parent / "ABOUT.md"
USER_ERRORS = (EvaluationError, ModelError, SubmissionError)


def user_facing(fn):
    """Project errors become their message; anything else a generic one (and a log entry)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from e
        except Exception as e:
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error("Internal error; the maintainers can find it in the log.") from e

    return wrapper


class Space:
    """The services behind the handlers, created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.on_space = bool(settings.space_id)
        self._submissions: Submissions | None = None
        self._downloads = tempfile.TemporaryDirectory(prefix="mitosis-downloads-")

    def download_path(self, name: str) -> Path:
        """A fresh file for a download, in a folder removed when the process ends.

        Gradio copies the file into its own cache, which ``delete_cache`` cleans hourly.
        """
        return Path(tempfile.mkdtemp(dir=self._downloads.name)) / name

    @property
    def submissions(self) -> Submissions:
        """The submission service (and the store behind it)."""
        if self._submissions is None:
            self._submissions = Submissions(self.settings, open_store(self.settings.database_url))
        return self._submissions

    def user(self, profile: gr.OAuthProfile | None) -> str:
        """The signed-in user; offline, the configured local identity."""
        if profile is None and self.on_space:
            raise gr.Error("Sign in with Hugging Face to submit and to see your submissions.")
        return resolve_user(profile.username if profile else None, self.settings)

    def models(self) -> dict[str, str]:
        """Model choices: the shipped one and every verified checkpoint stored here."""
        stored = verified_checkpoints(self.submissions.sessions, self.settings.data_dir)
        return {
            DEFAULT_MODEL: str(self.settings.default_checkpoint),
            **{name: str(path) for name, path in stored.items()},
        }

    def model_path(self, name: str | None) -> str:
        """The checkpoint behind a model choice."""
        path = self.models().get(name or DEFAULT_MODEL)
        if path is None:
            raise gr.Error(f"Unknown model {name!r}; choose one of the list.")
        return path

    def board(self, per_team: bool = False):
        """The ranked entries (released numbers only)."""
        return build_board(self.submissions.sessions, per_team=per_team)

    def examples(self) -> list[list[str]]:
        """A few public AMi-Br test crops for the Classify tab."""
        try:
            bundle = PublicBundle(self.settings.public_dir)
        except EvaluationError:
            return []
        return [
            [str(bundle.test_crops_dir / f"{i}.png")] for i in bundle.split_ids("amibr_test")[:8]
        ]


def build_demo(settings: Settings) -> gr.Blocks:
    """The Gradio app for ``settings``; nothing is loaded until a handler runs."""
    space = Space(settings)

    @gpu
    @user_facing
    def classify(image: str, model: str, tta: bool, explain: bool = True):
        """P(atypical), the decision and (when ``explain``) the Grad-CAM overlay of one crop."""
        if not image:
            raise gr.Error("Upload a crop first (PNG, JPEG, TIFF or WebP).")
        try:
            predictor = load_predictor(space.model_path(model))
            if not explain:
                answer = predictor.predict([image], tta=tta)[0]
                return round(answer.prob_atypical, 4), answer.label, None
            explanation = predictor.explain(image, tta=tta)
        except BaseException:
            discard_upload(image)  # a refused upload leaves nothing behind
            raise
        p = explanation.prediction
        return round(p.prob_atypical, 4), p.label, explanation.overlay

    @gpu
    @user_facing
    def classify_many(files: list[str] | None, model: str, tta: bool):
        if not files:
            raise gr.Error("Upload one or more crops first.")
        predictions = load_predictor(space.model_path(model)).predict(files, tta=tta)
        table = pd.DataFrame(
            {
                "image": [Path(f).name for f in files],
                "prob_atypical": [round(p.prob_atypical, 4) for p in predictions],
                "label": [p.label for p in predictions],
            }
        )
        out = space.download_path("predictions.csv")
        table.to_csv(out, index=False)
        return table, str(out)

    @user_facing
    def leaderboard(search: str, method: str, sources: list[str], per_team: bool):
        """The board as a table, filtered."""
        return display_table(
            space.board(per_team),
            search=search or "",
            method=method or "all",
            sources=tuple(sources or SOURCES),
        )

    @user_facing
    def board_extras(per_team: bool):
        entries = space.board(per_team)
        choices = [(f"#{e.rank} {e.model_name}", e.submission_id) for e in entries]
        return domain_plot_frame(entries), gr.Dropdown(choices=choices, value=None)

    @user_facing
    def detail(submission_id):
        return {} if submission_id is None else entry_details(space.board(), int(submission_id))

    @user_facing
    def export(kind: str) -> str:
        rows = board_rows(space.board())
        out = space.download_path(f"leaderboard.{kind}")
        out.write_text(to_csv(rows) if kind == "csv" else to_json(rows))
        return str(out)

    def _meta(name, team, method, backbone, pretraining, data, midog, paper, code, about):
        return EntryMetadata(
            name or "",
            team or "",
            method or "other",
            backbone or "",
            pretraining or "",
            data or "",
            bool(midog),
            paper or "",
            code or "",
            about or "",
        )

    def submit_handler(kind: str):
        """The handler of one upload kind (``predictions`` or ``checkpoint``)."""
        what = "prediction file (.csv)" if kind == "predictions" else "checkpoint (.zip)"

        @user_facing
        def submit(
            file: str | None,
            name: str,
            team: str,
            method: str,
            backbone: str,
            pretraining: str,
            data: str,
            midog: bool,
            paper: str,
            code: str,
            about: str,
            profile: gr.OAuthProfile | None = None,
        ) -> dict:
            if not file:
                raise gr.Error(f"Upload a {what} first.")
            try:
                meta = _meta(
                    name, team, method, backbone, pretraining, data, midog, paper, code, about
                )
                upload = getattr(space.submissions, f"submit_{kind}")
                return upload(space.user(profile), Path(file), meta).to_dict()
            finally:
                discard_upload(file)  # stored by hash when accepted; gone when refused

        submit.__doc__ = f"Validate and queue a {what}; returns the job's status."
        return submit

    submit_predictions = submit_handler("predictions")
    submit_checkpoint = submit_handler("checkpoint")

    @user_facing
    def submission_status(job_id: float | None, profile: gr.OAuthProfile | None = None) -> dict:
        """Status and aggregate scores of one of your jobs."""
        if job_id is None:
            raise gr.Error("Give the job id that your submission returned.")
        return space.submissions.status(space.user(profile), int(job_id)).to_dict()

    @user_facing
    def my_submissions(profile: gr.OAuthProfile | None = None) -> pd.DataFrame:
        if profile is None and space.on_space:
            return pd.DataFrame()  # signed out: nothing to show, and no error every 3 s
        views = space.submissions.my_submissions(space.user(profile))
        return pd.DataFrame(
            [
                {
                    **{k: v for k, v in view.to_dict().items() if k != "scores"},
                    "balanced_accuracy": json.dumps(
                        {split: (s or {}).get("ba") for split, s in view.scores.items()}
                    ),
                }
                for view in views
            ]
        )

    @user_facing
    def worker_health() -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "worker": w.name,
                    "device": w.device,
                    "state": w.state,
                    "job": "" if w.job_id is None else w.job_id,
                    "last heartbeat": f"{w.seconds_since_heartbeat:.0f} s ago",
                    "health": "alive" if w.alive else "silent",
                }
                for w in workers.health(space.submissions.sessions)
            ],
            columns=["worker", "device", "state", "job", "last heartbeat", "health"],
        )

    with gr.Blocks(title="Atypical mitosis benchmark", delete_cache=(3600, 7200)) as demo:
        gr.Markdown(f"# Atypical vs normal mitosis\n{NOTICE}")
        with gr.Tab("Classify"):
            with gr.Row():
                with gr.Column():
                    crop_image = CropImage(
                        type="filepath", label="Mitosis crop (128x128 native)", elem_id="crop"
                    )
                    model_choice = gr.Dropdown(
                        [DEFAULT_MODEL],
                        value=DEFAULT_MODEL,
                        label="Model",
                        allow_custom_value=True,
                    )
                    tta_switch = gr.Checkbox(label="Test-time augmentation (8 views)")
                    explain_switch = gr.Checkbox(value=True, label="Show where the model looked")
                    classify_button = gr.Button("Classify", variant="primary")
                with gr.Column():
                    prob_atypical = gr.Number(label="P(atypical)", elem_id="prob-atypical")
                    decision = gr.Textbox(label="Decision", elem_id="decision")
                    overlay = gr.Image(label="Where the model looked (Grad-CAM)")
            if examples := space.examples():
                gr.Examples(examples, inputs=[crop_image], label="Public AMi-Br test crops")
            with gr.Accordion("Many crops", open=False):
                crop_files = gr.File(
                    file_count="multiple", label="Crops", file_types=["image"], elem_id="many-crops"
                )
                classify_many_button = gr.Button("Classify all")
                batch_table = gr.Dataframe(
                    label="Answers", interactive=False, elem_id="batch-table"
                )
                batch_csv = gr.File(label="Answers as CSV", elem_id="batch-csv")
        with gr.Tab("Leaderboard") as leaderboard_tab:
            with gr.Row():
                search_box = gr.Textbox(label="Search model, team, backbone", elem_id="search")
                method_filter = gr.Dropdown(["all", *METHOD_TYPES], value="all", label="Method")
                source_filter = gr.CheckboxGroup(
                    list(SOURCES), value=list(SOURCES), label="Entries"
                )
                team_switch = gr.Checkbox(label="Best entry per team")
            board_table = gr.Dataframe(
                interactive=False, wrap=False, elem_id="board", datatype="str", max_height=600
            )
            domain_plot = gr.ScatterPlot(
                x="amibr_test_ba",
                y="hidden_mean_ba",
                color="source",
                x_title="AMi-Br test BA (in-domain)",
                y_title="hidden mean BA (out-of-domain)",
                tooltip=["model", "amibr_test_ba", "hidden_mean_ba"],
                title="In-domain vs out-of-domain balanced accuracy",
                elem_id="domain-plot",
            )
            entry_choice = gr.Dropdown(label="Details of one entry", elem_id="entry-choice")
            entry_json = gr.JSON(label="All metrics and provenance", elem_id="entry-json")
            with gr.Row():
                csv_button = gr.Button("Download CSV")
                json_button = gr.Button("Download JSON")
                board_file = gr.File(label="Export", elem_id="board-file")
        with gr.Tab("Submit"):
            if space.on_space:
                gr.LoginButton()
            gr.Markdown(
                "Submit a **prediction file** (`image_id,prob_atypical[,label]`, one row per crop "
                "of the test manifest: *self-reported*) or a **checkpoint** zip (`config.json` + "
                "`model.safetensors`, or a LoRA adapter: *verified*, the server runs it). "
                f"Hidden-split scoring: {settings.hidden_quota} per user per 24 h."
            )
            with gr.Row():
                gr.DownloadButton("Test crops (zip)", value=_public(settings, "test_crops.zip"))
                gr.DownloadButton(
                    "Template predictions", value=_public(settings, "predictions_template.csv")
                )
            with gr.Row():
                name_box = gr.Textbox(label="Model name", elem_id="model-name")
                team_box = gr.Textbox(label="Team")
                method_box = gr.Dropdown(list(METHOD_TYPES), value="end-to-end", label="Method")
            with gr.Row():
                backbone_box = gr.Textbox(label="Backbone")
                pretraining_box = gr.Textbox(label="Pretraining data")
                data_box = gr.Textbox(label="Training data", value="AMi-Br train")
                midog_box = gr.Checkbox(label="Training data includes MIDOG++")
            with gr.Row():
                paper_box = gr.Textbox(label="Paper link")
                code_box = gr.Textbox(label="Code link")
            about_box = gr.Textbox(label="Description", lines=2)
            with gr.Row():
                predictions_file = UploadFile(
                    label="Prediction file (.csv)", file_types=[".csv"], elem_id="predictions-file"
                )
                checkpoint_file = UploadFile(label="Checkpoint (.zip)", file_types=[".zip"])
            with gr.Row():
                submit_predictions_button = gr.Button("Submit predictions", variant="primary")
                submit_checkpoint_button = gr.Button("Submit checkpoint", variant="primary")
            receipt = gr.JSON(label="Your submission", elem_id="receipt")
            with gr.Row():
                job_box = gr.Number(label="Job id", precision=0)
                status_button = gr.Button("Check status")
            mine = gr.Dataframe(label="My submissions", interactive=False, elem_id="mine")
            worker_table = gr.Dataframe(
                label="Evaluation workers", interactive=False, elem_id="workers"
            )
            refresh = gr.Timer(3)
        with gr.Tab("About"):
            gr.Markdown(ABOUT.read_text() if ABOUT.is_file() else "")

        meta = [
            name_box,
            team_box,
            method_box,
            backbone_box,
            pretraining_box,
            data_box,
            midog_box,
            paper_box,
            code_box,
            about_box,
        ]
        filters = [search_box, method_filter, source_filter, team_switch]
        demo.load(
            lambda: gr.Dropdown(choices=list(space.models())),
            None,
            model_choice,
            api_visibility="private",
        )
        classify_button.click(
            classify,
            [crop_image, model_choice, tta_switch, explain_switch],
            [prob_atypical, decision, overlay],
            api_name="classify",
        )
        classify_many_button.click(
            classify_many,
            [crop_files, model_choice, tta_switch],
            [batch_table, batch_csv],
            api_visibility="private",
        )
        demo.load(leaderboard, filters, board_table, api_name="leaderboard")
        gr.on(
            [search_box.submit, method_filter.change, source_filter.change, team_switch.change],
            leaderboard,
            filters,
            board_table,
            api_visibility="private",
        )
        gr.on(
            [leaderboard_tab.select, team_switch.change],
            board_extras,
            team_switch,
            [domain_plot, entry_choice],
            api_visibility="private",
        )
        entry_choice.change(detail, entry_choice, entry_json, api_visibility="private")
        csv_button.click(lambda: export("csv"), None, board_file, api_visibility="private")
        json_button.click(lambda: export("json"), None, board_file, api_visibility="private")
        submit_predictions_button.click(
            submit_predictions, [predictions_file, *meta], receipt, api_name="submit_predictions"
        )
        submit_checkpoint_button.click(
            submit_checkpoint, [checkpoint_file, *meta], receipt, api_name="submit_checkpoint"
        )
        status_button.click(submission_status, job_box, receipt, api_name="submission_status")
        refresh.tick(my_submissions, None, mine, api_visibility="private")
        refresh.tick(worker_health, None, worker_table, api_visibility="private")
    return demo


def _public(settings: Settings, name: str) -> str | None:
    path = settings.public_dir / name
    return str(path) if path.is_file() else None


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
    }


def start_backend(settings: Settings) -> WorkerSupervisor | None:
    """The reaper, and (unless MITOSIS_START_WORKER=0) a supervised worker, beside the app.

    The reaper runs here too, so a job whose worker died goes back to the queue even while no
    worker is alive.
    """
    submissions = Submissions(settings, open_store(settings.database_url))
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
    logging.basicConfig(level=logging.INFO)
    app_settings = Settings.from_env()
    start_backend(app_settings)
    build_demo(app_settings).launch(**launch_kwargs(app_settings))
