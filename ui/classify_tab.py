"""The Classify tab: one crop (or a gallery example) in; P(atypical), decision, Grad-CAM out.

A crop is answered as soon as it is dropped or picked (or a setting changes); the Classify
button runs ``/classify`` again. ``/classify`` keeps its three outputs; the answer in words and
the note on the image's size follow in a second, private step. Many crops: each file gets its
own row, a bad one its own message, and answers named by test-crop id also come as a
prediction file.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from evaluation.errors import EvaluationError
from evaluation.prediction_file import as_prediction_file
from fileio import write_predictions
from models.batching import BATCHER
from models.errors import ModelError
from models.imaging import image_note, load_crop
from models.predictor import Predictor, answer_text, load_predictor, predictions_table
from ui.components import CropImage, discard_upload
from ui.space import DEFAULT_MODEL, ZERO_GPU, Space, bind, gpu, user_facing

CONCURRENT_CLASSIFY = 64


def run(predictor: Predictor, crop, tta: bool, explain: bool):
    """The answer (or explanation) of one crop, through the shared batcher.

    On ZeroGPU directly: the GPU exists only inside the decorated call.
    """
    if not ZERO_GPU:
        return (BATCHER.explain if explain else BATCHER.predict)(predictor, crop, tta=tta)
    if explain:
        return predictor.explain_array(crop[None], tta=tta)[0]
    return predictor.answer(predictor.predict_array(crop[None], tta=tta)[0])


@user_facing
def classify(space: Space, image: str, model: str, tta: bool, explain: bool = True):
    """P(atypical), the decision and (when ``explain``) the Grad-CAM overlay of one crop."""
    if not image:
        raise gr.Error("Upload a crop first (PNG, JPEG, TIFF or WebP).")
    space.users_waiting.touch()
    try:
        predictor = load_predictor(space.model_path(model))
        crop = load_crop(image)  # a bad file is refused here, alone
    except BaseException:
        discard_upload(image)  # a refused upload leaves nothing behind
        raise
    if not explain:
        answer = run(predictor, crop, tta, explain=False)
        return round(answer.prob_atypical, 4), answer.label, None
    explanation = run(predictor, crop, tta, explain=True)
    p = explanation.prediction
    return round(p.prob_atypical, 4), p.label, explanation.overlay


@user_facing
def classify_many(space: Space, files: list[str] | None, model: str, tta: bool):
    """One row per file (a refused one with its message), the CSV, and a prediction file."""
    if not files:
        raise gr.Error("Upload one or more crops first.")
    space.users_waiting.touch()
    predictor = load_predictor(space.model_path(model))
    crops, names, notes, refused = [], [], [], {}
    for file in files:
        try:
            crops.append(load_crop(file))
            names.append(Path(file).name)
            notes.append(_image_note(file))  # e.g. a 1024 px or gray file: what was done to it
        except ModelError as e:  # this file alone: the others are still classified
            refused[Path(file).name] = str(e)
    if not crops:
        predictions = []
    elif ZERO_GPU:
        predictions = [predictor.answer(p) for p in predictor.predict_array(crops, tta=tta)]
    else:
        predictions = BATCHER.predict_many(predictor, crops, tta=tta)
    table = predictions_table(names, predictions)
    out = space.download_path("answers.csv")  # not a prediction file: that is submission.csv
    table.to_csv(out, index=False)
    try:
        submission = as_prediction_file(table, space.submissions.bundle.manifest)
        why_not = "the crops are not all test crops named by their id (`<image_id>.png`)"
    except EvaluationError:  # no public release here: no test-crop ids to match
        submission, why_not = None, "this server has no public release to match test-crop ids"
    submission_path = None
    if submission is not None:
        submission_path = space.download_path("submission.csv")
        write_predictions(submission, submission_path)
    shown = pd.concat(  # refused files first: a long list would hide them at its end
        [
            pd.DataFrame(
                [[name, None, "not classified", message] for name, message in refused.items()],
                columns=[*table.columns, "note"],
            ),
            table.round({"prob_atypical": 4}).assign(note=notes),
        ],
        ignore_index=True,
    )
    return (
        shown,
        str(out),
        submission_path and str(submission_path),
        _batch_summary(len(names), refused, submission is not None, why_not),
    )


def _image_note(file: str) -> str:
    try:
        return image_note(file)
    except ModelError:
        return ""


def _batch_summary(classified: int, refused: dict, as_file: bool, why_not: str) -> str:
    """One line over the answers: how many, how many refused, and the prediction file or why not."""
    line = f"**{classified}** crop{'s' if classified != 1 else ''} classified"
    if refused:
        line += f", **{len(refused)}** not classified (listed first, with the reason)"
    if as_file:
        return line + ". The answers are also a prediction file (only these crops)."
    return line + f". No prediction file: {why_not}."


def describe(space: Space, image: str, prob: float) -> str:
    """The answer in words, with notes on the image and, if known, the experts' label.

    The notes: what was done to an image that is not a 128x128 colour crop; the label: that of
    a public AMi-Br test crop (the examples are some).
    """
    text = answer_text(prob)
    if note := _image_note(image):
        text += f"\n\n⚠ {note}"
    if truth := space.public_label(image):
        text += f"\n\nThis is a public AMi-Br test crop; the pathologists labelled it **{truth}**."
    return text


def empty_if_removed(image: str | None):
    """After a refusal, an upload the server removed leaves the crop box (not a broken image).

    A crop still there (a model that failed, say) stays.
    """
    return None if image and not Path(image).is_file() else gr.skip()


def model_choices(space: Space):
    """The shipped model and every verified checkpoint stored on the server."""
    return gr.Dropdown(choices=list(space.models()))


WAITING = "Drop a crop here, or pick one of the public test crops below, to classify it."


# A new crop or settings, in the browser at once: the last answer goes before the next comes,
# and the request gets a tag of its own (see :func:`answer_if_current`)
CLEARED_AND_ASKED = (
    "() => [{__type__: 'update', value: null, visible: false}, '', null, "
    f"{json.dumps(WAITING)}, String(Date.now()) + Math.random()]"
)


def answer_crop(
    space: Space, image: str | None, model: str, tta: bool, explain: bool, asked: str
) -> dict:
    """The whole answer to the crop on screen, with the tag of the request it answers.

    Refusals come from :func:`classify` as its messages; with no crop (or a refused one, whose
    upload is gone), the cleared view stays.
    """
    if not image or not Path(image).is_file():  # none, or a refused upload already removed
        return {"asked": asked, "views": (gr.skip(),) * 4}
    prob, decision, overlay = classify(space, image, model, tta, explain)
    views = gr.Number(value=prob, visible=True), decision, overlay, describe(space, image, prob)
    return {"asked": asked, "views": views}


def answer_if_current(answer: dict | None, asked: str) -> tuple:
    """The answer's views, unless the crop or settings changed since it was asked.

    An answer computed for the crop just replaced would otherwise land after the clearing,
    beside the new crop, until the new answer came: it stays off the page.
    """
    if not answer or answer["asked"] != asked:
        return (gr.skip(),) * 4
    return answer["views"]


def classify_tab(demo: gr.Blocks, space: Space) -> None:
    """Lay out the tab and wire its events (``/classify`` is public)."""
    with gr.Tab("Classify"):
        with gr.Row():
            with gr.Column():
                crop_image = CropImage(
                    type="filepath", label="Mitosis crop (128x128 native)", elem_id="crop"
                )
                model_choice = gr.Dropdown(
                    [DEFAULT_MODEL], value=DEFAULT_MODEL, label="Model", allow_custom_value=True
                )
                tta_switch = gr.Checkbox(label="Test-time augmentation (8 views)")
                explain_switch = gr.Checkbox(value=True, label="Show where the model looked")
                classify_button = gr.Button("Classify", variant="primary")
            with gr.Column():
                prob_atypical = gr.Number(  # shown with the first answer: no "0" before it
                    label="P(atypical), 0 to 1",
                    elem_id="prob-atypical",
                    visible=False,
                    interactive=False,  # an answer, not an input
                )
                decision = gr.Textbox(label="Decision (atypical at P ≥ 0.5)", elem_id="decision")
                answer = gr.Markdown(WAITING, elem_id="answer")
                overlay = gr.Image(label="Where the model looked (Grad-CAM)", elem_id="overlay")
                legend = gr.Markdown(
                    "Grad-CAM colours, relative within the crop: **red** = the regions that "
                    "pushed the call most, through yellow and green, to **blue** = least. "
                    "It shows where the network looked, not why.",
                    elem_id="overlay-legend",
                )
        if examples := space.examples():
            gr.Examples(
                examples, inputs=[crop_image], label="Public AMi-Br test crops", elem_id="examples"
            )
        awaited = gr.Textbox(visible=False)  # the tag of the answer the page waits for
        tagged_answer = gr.State()
        classify_api = gr.Button(visible=False)  # /classify, for API clients
        with gr.Accordion("Many crops", open=False):
            crop_files = gr.File(
                file_count="multiple", label="Crops", file_types=["image"], elem_id="many-crops"
            )
            classify_many_button = gr.Button("Classify all")
            batch_summary = gr.Markdown(elem_id="batch-summary")
            batch_table = gr.Dataframe(  # its columns before the first answer, not "1 2 3"
                pd.DataFrame(columns=["image", "prob_atypical", "label", "note"]),
                label="Answers",
                interactive=False,
                elem_id="batch-table",
            )
            with gr.Row():
                batch_csv = gr.File(label="Answers as CSV", elem_id="batch-csv")
                batch_submission = gr.File(
                    label="As a prediction file (crops named by test-crop id)",
                    elem_id="batch-submission",
                )

    demo.load(bind(model_choices, space), None, model_choice, api_visibility="private")
    settings = [crop_image, model_choice, tta_switch, explain_switch]
    shared = {  # the batcher shares forward passes among concurrent crops
        "concurrency_limit": CONCURRENT_CLASSIFY,
        "concurrency_id": "classify",
        "show_progress": "hidden",  # a refusal is the toast's message, not a bare "Error" badge
    }
    # /classify keeps its three outputs for API clients; the page's Classify button answers
    # through the steps below, like a new crop or setting
    classify_api.click(
        gpu(bind(classify, space)),  # ZeroGPU gets the inputs only, not the space
        settings,
        [prob_atypical, decision, overlay],
        api_name="classify",
        **shared,
    )
    # drop a crop (pick an example, change a setting, press Classify) and the answer follows:
    # cleared first, so a refused crop never shows the last crop's answer, and tagged, so an
    # answer to a crop or settings since replaced is not shown
    answer_views = [prob_atypical, decision, overlay, answer]
    asked = gr.on(
        [
            crop_image.change,
            model_choice.input,
            tta_switch.input,
            explain_switch.input,
            classify_button.click,
        ],
        None,
        None,
        [*answer_views, awaited],
        js=CLEARED_AND_ASKED,
        api_visibility="private",
    )
    answered = asked.then(
        gpu(bind(answer_crop, space)),
        [*settings, awaited],
        tagged_answer,
        api_visibility="private",
        trigger_mode="always_last",  # a crop dropped mid-answer is answered after, not skipped
        **shared,
    )
    answered.then(
        answer_if_current,
        [tagged_answer, awaited],
        answer_views,
        api_visibility="private",
        trigger_mode="always_last",
        **shared,
    )
    answered.failure(
        empty_if_removed, crop_image, crop_image, api_visibility="private", show_progress="hidden"
    )
    explain_switch.input(  # no empty heat-map box or legend while it is off
        lambda on: (gr.Image(visible=on), gr.Markdown(visible=on)),
        explain_switch,
        [overlay, legend],
        api_visibility="private",
        show_progress="hidden",
    )
    classify_many_button.click(
        gpu(bind(classify_many, space)),
        [crop_files, model_choice, tta_switch],
        [batch_table, batch_csv, batch_submission, batch_summary],
        api_visibility="private",
    )
