"""The Submit tab: the metadata form, uploads, receipts, status, cancel, the queue's workers."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from leaderboard.publication import publish, release_status
from settings import Settings
from store.entry import FIELD_LABELS, METHOD_TYPES, EntryMetadata
from submissions.errors import JobNotFound
from submissions.jobs import queue_table
from submissions.receipts import job_report, receipt_card, submissions_table
from submissions.worker_registry import health_table
from ui.components import UploadFile, discard_upload
from ui.space import Space, bind, user_facing
from ui.submission_guide import SUBMISSION_GUIDE


def _submit(space: Space, method: str, what: str, file: str | None, values: dict, **scope):
    """Queue an upload with ``space.submissions.<method>``; the upload leaves Gradio's cache."""
    if not file:
        raise gr.Error(f"Upload a {what} first.")
    try:
        view = getattr(space.submissions, method)(
            space.user(scope.pop("profile")), Path(file), EntryMetadata.from_dict(values), **scope
        )
        return job_report(space.sessions, view)
    finally:
        discard_upload(file)  # stored by hash when accepted; gone when refused


@user_facing
def submit_predictions(
    space: Space,
    file: str | None,
    model_name: str,
    team: str,
    method_type: str,
    backbone: str,
    pretraining: str,
    training_data: str,
    uses_midog: bool,
    paper_url: str,
    code_url: str,
    description: str,
    public_only: bool = False,
    profile: gr.OAuthProfile | None = None,
) -> dict:
    """Validate and queue a prediction file (.csv); returns the job's status."""
    values = {k: v for k, v in locals().items() if k in FIELD_LABELS}
    scope = {"public_only": True} if public_only else {}
    return _submit(
        space,
        "submit_predictions",
        "prediction file (.csv)",
        file,
        values,
        profile=profile,
        **scope,
    )


@user_facing
def submit_checkpoint(
    space: Space,
    file: str | None,
    model_name: str,
    team: str,
    method_type: str,
    backbone: str,
    pretraining: str,
    training_data: str,
    uses_midog: bool,
    paper_url: str,
    code_url: str,
    description: str,
    profile: gr.OAuthProfile | None = None,
) -> dict:
    """Validate and queue a checkpoint (.zip); returns the job's status."""
    values = {k: v for k, v in locals().items() if k in FIELD_LABELS}
    return _submit(space, "submit_checkpoint", "checkpoint (.zip)", file, values, profile=profile)


@user_facing
def submit_hub_model(
    space: Space,
    repo_id: str,
    revision: str,
    token: str,
    model_name: str,
    team: str,
    method_type: str,
    backbone: str,
    pretraining: str,
    training_data: str,
    uses_midog: bool,
    paper_url: str,
    code_url: str,
    description: str,
    profile: gr.OAuthProfile | None = None,
) -> dict:
    """Fetch a checkpoint from the Hub by model id (pinned to a commit) and queue it.

    ``token`` (gated or private repos) is used for the fetch only and kept nowhere.
    """
    values = {k: v for k, v in locals().items() if k in FIELD_LABELS}
    if not (repo_id or "").strip():
        raise gr.Error("Give the Hub model id, e.g. lab/mitosis-model.")
    view = space.submissions.submit_hub_model(
        space.user(profile),
        repo_id,
        revision,
        EntryMetadata.from_dict(values),
        token=(token or "").strip() or None,
    )
    return job_report(space.sessions, view)


def _job_id(job_id: float | None, what: str) -> int:
    if job_id is None or job_id < 1:  # an empty box reads 0
        raise gr.Error(f"Give the job id of {what}: your receipt and My submissions show it.")
    if job_id != int(job_id):
        raise gr.Error(f"A job id is a whole number; found {job_id:g}.")
    return int(job_id)


@user_facing
def submission_status(
    space: Space, job_id: float | None, profile: gr.OAuthProfile | None = None
) -> dict:
    """Status and released scores of one of your jobs."""
    view = space.submissions.status(space.user(profile), _job_id(job_id, "your submission"))
    return job_report(space.sessions, view)


@user_facing
def cancel_submission(
    space: Space, job_id: float | None, profile: gr.OAuthProfile | None = None
) -> dict:
    """Cancel one of your jobs that has not started; returns its status."""
    view = space.submissions.cancel(space.user(profile), _job_id(job_id, "the job to cancel"))
    return job_report(space.sessions, view)


@user_facing
def withdraw_submission(
    space: Space, job_id: float | None, profile: gr.OAuthProfile | None = None
) -> dict:
    """Take the entry of one of your jobs off the public board; returns its status."""
    job = _job_id(job_id, "the entry to withdraw")
    view = space.submissions.withdraw(space.user(profile), job)
    return job_report(space.sessions, view)


@user_facing
def publish_submission(
    space: Space, job_id: float | None, profile: gr.OAuthProfile | None = None
) -> dict:
    """Publish one of your withheld scorings from the allowance; returns its status."""
    user, job = space.user(profile), _job_id(job_id, "the withheld scoring to publish")
    publish(space.sessions, space.settings, user, job)
    return job_report(space.sessions, space.submissions.status(user, job))


@user_facing
def my_submissions(space: Space, profile: gr.OAuthProfile | None = None):
    """The signed-in user's jobs, and what they may still spend."""
    if profile is None and space.on_space:  # signed out: no error every 3 s
        return submissions_table([]), "Sign in to see your submissions and allowance."
    user = space.user(profile)
    views = space.submissions.my_submissions(user)
    table = submissions_table([job_report(space.sessions, view) for view in views])
    bar = release_status(space.sessions, space.settings, user)
    return table, f"{space.submissions.allowance(user)}\n\n{bar}\n\nYou submit as **{user}**."


@user_facing
def public_queue(space: Space, profile: gr.OAuthProfile | None = None) -> pd.DataFrame:
    """Everyone's queued and running jobs (others' anonymised)."""
    viewer = None if profile is None and space.on_space else space.user(profile)
    return queue_table(space.sessions, viewer)


@user_facing
def worker_health(space: Space) -> pd.DataFrame:
    """The evaluation workers: device, heartbeat, what each one runs."""
    return health_table(space.sessions)


@user_facing
def follow_receipt(space: Space, report: dict | None, profile: gr.OAuthProfile | None = None):
    """The receipt as its job stands now, redrawn only when something changed.

    Finished jobs are read too: an answer computed before a click but delivered after it (a
    loaded server) may have put an older state on the page, and the next tick mends it.
    """
    if not report or (profile is None and space.on_space):  # signed out: no error every 3 s
        return gr.skip(), gr.skip()
    try:
        view = space.submissions.status(space.user(profile), report["job_id"])
    except JobNotFound:  # signed in as someone else since, or another store: not theirs now
        return None, ""
    # what the submit call did (renamed, already scored) stays said while its job is shown
    fresh = job_report(space.sessions, view) | {"notice": report.get("notice", "")}
    if fresh == report:
        return gr.skip(), gr.skip()
    return fresh, receipt_card(fresh)


def receipt_of_box(report: dict | None, job_id: float | None):
    """After a refused job-id action: the receipt stays only if it is the box's job."""
    if report and job_id == report.get("job_id"):
        return gr.skip(), gr.skip()
    return None, ""


def show_receipt(report: dict | None):
    """The receipt in words, and its job id for the status and cancel buttons."""
    if not report:
        return "", None
    return receipt_card(report), report["job_id"]


def submit_tab(demo: gr.Blocks, space: Space, settings: Settings) -> None:
    """Lay out the tab and wire its events (the submit, status and cancel endpoints are public)."""
    with gr.Tab("Submit"):
        if space.on_space:
            gr.LoginButton()
        gr.Markdown(
            "Submit a **prediction file** (*self-reported*) or a **checkpoint** zip "
            "(*verified*: the server runs it on the hidden crops): one file, and its button. "
            f"Fields marked * are required. Hidden-split scoring: {settings.hidden_quota} per "
            "user per 24 h; hidden-split scores are released rounded, and only for improvements "
            "(see About)."
        )
        gr.Markdown(
            "Before you spend a hidden scoring, the line below says what it must reach to be "
            "released. A withheld scoring can be published from a small allowance, any entry "
            "can be withdrawn, and **Public split only** checks a file on AMi-Br test without "
            "spending a hidden scoring."
        )
        allowance = gr.Markdown(elem_id="allowance")
        with gr.Accordion("How to submit, step by step", open=False, elem_id="guide"):
            gr.Markdown(SUBMISSION_GUIDE)
        with gr.Row():
            gr.DownloadButton("Test crops (zip)", value=_public(settings, "test_crops.zip"))
            gr.DownloadButton(
                "Template predictions", value=_public(settings, "predictions_template.csv")
            )
        with gr.Row():
            predictions_file = UploadFile(
                label="Prediction file (.csv)", file_types=[".csv"], elem_id="predictions-file"
            )
            checkpoint_file = UploadFile(label="Checkpoint (.zip)", file_types=[".zip"])
        with gr.Accordion("…or a checkpoint on the Hugging Face Hub", open=False, elem_id="hub"):
            with gr.Row():
                hub_repo = gr.Textbox(
                    label="Model id", placeholder="lab/mitosis-model", elem_id="hub-repo"
                )
                hub_revision = gr.Textbox(
                    label="Revision (branch, tag or commit)", value="main", elem_id="hub-revision"
                )
                hub_token = gr.Textbox(
                    label="Read token (gated or private repos only; used once, never stored)",
                    type="password",
                    value="",
                    elem_id="hub-token",
                )
            gr.Markdown(
                "The revision is pinned to the commit it points at now; only `config.json`, "
                "`model.safetensors` (or the LoRA adapter files) and `README.md` are fetched."
            )
        form = _metadata_form()
        public_only = gr.Checkbox(
            label="Public split only: score AMi-Br test alone (no hidden scoring spent, "
            "not on the board); prediction files",
            elem_id="public-only",
        )
        with gr.Row():
            submit_predictions_button = gr.Button("Submit predictions", variant="primary")
            submit_checkpoint_button = gr.Button("Submit checkpoint", variant="primary")
            submit_hub_button = gr.Button("Submit Hub model", variant="primary")
        receipt_text = gr.Markdown(elem_id="receipt")
        receipt = gr.JSON(visible="hidden", label="receipt", elem_id="receipt-json")  # API answer
        with gr.Row():
            job_box = gr.Number(label="Job id", elem_id="job-id")  # no precision: 2.5 is not 2
            status_button = gr.Button("Check status")
            cancel_button = gr.Button("Cancel (while queued)")
            withdraw_button = gr.Button("Withdraw from the board", elem_id="withdraw")
            publish_button = gr.Button("Publish (withheld; from allowance)", elem_id="publish")
        mine = gr.Dataframe(label="My submissions", interactive=False, elem_id="mine")
        queue = gr.Dataframe(
            label="The queue (everyone's jobs; others' without their ids)",
            interactive=False,
            elem_id="queue",
        )
        worker_table = gr.Dataframe(
            label="Evaluation workers", interactive=False, elem_id="workers"
        )
        refresh = gr.Timer(3)

    predictions_sent = submit_predictions_button.click(
        bind(submit_predictions, space),
        [predictions_file, *form, public_only],
        receipt,
        api_name="submit_predictions",
    )
    checkpoint_sent = submit_checkpoint_button.click(
        bind(submit_checkpoint, space),
        [checkpoint_file, *form],
        receipt,
        api_name="submit_checkpoint",
    )
    for sent, box in ((predictions_sent, predictions_file), (checkpoint_sent, checkpoint_file)):
        # accepted or refused, the upload has left Gradio's cache (stored by hash, or gone):
        # an empty box, not a file name that no longer points at anything
        sent.then(lambda: None, None, box, api_visibility="private")
    job_events = [
        status_button.click(
            bind(submission_status, space), job_box, receipt, api_name="submission_status"
        ),
        cancel_button.click(
            bind(cancel_submission, space), job_box, receipt, api_name="cancel_submission"
        ),
        withdraw_button.click(
            bind(withdraw_submission, space), job_box, receipt, api_name="withdraw_submission"
        ),
        publish_button.click(
            bind(publish_submission, space), job_box, receipt, api_name="publish_submission"
        ),
    ]
    for event in (
        predictions_sent,
        checkpoint_sent,
        submit_hub_button.click(
            bind(submit_hub_model, space),
            [hub_repo, hub_revision, hub_token, *form],
            receipt,
            api_name="submit_hub_model",
        ),
        *job_events,
    ):
        event.success(show_receipt, receipt, [receipt_text, job_box], api_visibility="private")
    for event in job_events:  # a refused look-up of another job: not that job's old receipt
        event.failure(
            receipt_of_box, [receipt, job_box], [receipt, receipt_text], api_visibility="private"
        )
    refresh.tick(
        bind(follow_receipt, space), receipt, [receipt, receipt_text], api_visibility="private"
    )
    shown = [demo.load, refresh.tick]  # filled with the page, not blank until the first tick
    gr.on(shown, bind(my_submissions, space), None, [mine, allowance], api_visibility="private")
    gr.on(shown, bind(public_queue, space), None, queue, api_visibility="private")
    gr.on(shown, bind(worker_health, space), None, worker_table, api_visibility="private")


def _metadata_form() -> list[gr.components.Component]:
    """One input per field of ``EntryMetadata``, in its order (* marks the required one).

    Optional fields start as "": Gradio makes an input without a value a required argument of
    the API, which would force a client to pass every field.
    """
    fields = {}
    with gr.Row():
        fields["model_name"] = gr.Textbox(
            label=FIELD_LABELS["model_name"] + " *", elem_id="model-name"
        )
        fields["team"] = gr.Textbox(label=FIELD_LABELS["team"], value="")
        fields["method_type"] = gr.Dropdown(
            list(METHOD_TYPES), value="end-to-end", label=FIELD_LABELS["method_type"]
        )
    with gr.Row():
        fields["backbone"] = gr.Textbox(label=FIELD_LABELS["backbone"], value="")
        fields["pretraining"] = gr.Textbox(label=FIELD_LABELS["pretraining"], value="")
        fields["training_data"] = gr.Textbox(
            label=FIELD_LABELS["training_data"], value="AMi-Br train"
        )
        fields["uses_midog"] = gr.Checkbox(label=FIELD_LABELS["uses_midog"])
    with gr.Row():
        fields["paper_url"] = gr.Textbox(label=FIELD_LABELS["paper_url"], value="")
        fields["code_url"] = gr.Textbox(label=FIELD_LABELS["code_url"], value="")
    fields["description"] = gr.Textbox(label=FIELD_LABELS["description"], lines=2, value="")
    return [fields[name] for name in FIELD_LABELS]


def _public(settings: Settings, name: str) -> str | None:
    path = settings.public_dir / name
    return str(path) if path.is_file() else None
