from __future__ import annotations

import ast
import json
import os
import re
import time
import urllib.error
import urllib.request

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from settings import REPO_ROOT, Settings
from store.errors import InvalidMetadata
from submissions.errors import ReservedAccount
from tests.backend import zip_dir
from tests.models.conftest import tiny_checkpoint
from ui import submit_tab
from ui.space import Space, user_facing

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only

META = (
    "api model",
    "team api",
    "end-to-end",
    "resnet18",
    "none",
    "AMi-Br train",
    False,
    "",
    "",
    "submitted through gradio_client",
)


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


def wait_finished(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.predict(job_id, api_name="/submission_status")
        if status["status"] in ("finished", "failed"):
            return status
        time.sleep(0.3)
    raise TimeoutError(status)


def test_exactly_the_public_endpoints(client):
    api = client.view_api(return_format="dict")["named_endpoints"]
    for name, endpoint in api.items():  # every input and output has a name, not "value_95"
        for part in endpoint["parameters"] + endpoint["returns"]:
            label = part.get("label") or part.get("parameter_name")
            assert label and not re.fullmatch(r"value_\d+", label), (name, part)
    assert set(api) == {
        "/classify",
        "/leaderboard",
        "/submit_predictions",
        "/submit_checkpoint",
        "/submit_hub_model",
        "/submission_status",
        "/cancel_submission",
        "/withdraw_submission",
        "/publish_submission",
    }
    required = {
        name: [
            p["parameter_name"] for p in endpoint["parameters"] if not p["parameter_has_default"]
        ]
        for name, endpoint in api.items()
    }  # a client passes these and names any other field it wants (the form's * fields)
    job = ["job_id"]
    assert required == {
        "/classify": ["image"],
        "/leaderboard": [],
        "/submit_predictions": ["file", "model_name"],
        "/submit_checkpoint": ["file", "model_name"],
        "/submit_hub_model": ["repo_id", "model_name"],
        "/submission_status": job,
        "/cancel_submission": job,
        "/withdraw_submission": job,
        "/publish_submission": job,
    }


def test_the_documented_calls_match_the_api(client):
    """Every ``client.predict`` in docs/submitting.md names a real endpoint and real arguments,
    and passes every required one."""
    api = client.view_api(return_format="dict")["named_endpoints"]
    page = (REPO_ROOT / "docs" / "submitting.md").read_text(encoding="utf-8")
    code = page.split("```python\nfrom gradio_client", 1)[1].split("```", 1)[0]
    calls = [
        node
        for node in ast.walk(ast.parse("from gradio_client" + code))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "predict"
    ]
    assert len(calls) == 8
    for call in calls:
        named = {k.arg: k.value for k in call.keywords}
        endpoint = api[named.pop("api_name").value]
        names = [p["parameter_name"] for p in endpoint["parameters"]]
        given = set(names[: len(call.args)]) | set(named)
        assert set(named) <= set(names), (set(named) - set(names), ast.unparse(call))
        required = {
            p["parameter_name"] for p in endpoint["parameters"] if not p["parameter_has_default"]
        }
        assert required <= given, ast.unparse(call)


def test_classify(client, app):
    crop = next((app.backend.settings.public_dir / "test_crops").glob("*.png"))
    prob, decision, overlay = client.predict(
        handle_file(str(crop)), "Default model (shipped)", False, api_name="/classify"
    )
    assert 0 <= prob <= 1 and decision == ("atypical" if prob >= 0.5 else "normal")
    assert os.path.getsize(overlay) > 0
    prob_tta, _, _ = client.predict(
        handle_file(str(crop)), "Default model (shipped)", True, api_name="/classify"
    )
    assert 0 <= prob_tta <= 1
    with pytest.raises(AppError, match="Unknown model 'nope'"):
        client.predict(handle_file(str(crop)), "nope", False, api_name="/classify")
    tiny = app.backend.settings.data_dir / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    with pytest.raises(AppError, match="8x8 pixels; crops must be at least 16 px"):
        client.predict(
            handle_file(str(tiny)), "Default model (shipped)", False, api_name="/classify"
        )


def test_submit_predictions_then_status_then_board(client, app):
    path = app.backend.settings.data_dir / "predictions.csv"
    path.write_bytes(app.backend.predictions(11))
    receipt = client.predict(  # by keyword: the fields left out take the form's defaults
        file=handle_file(str(path)),
        model_name="api model",
        team="team api",
        backbone="resnet18",
        api_name="/submit_predictions",
    )
    assert receipt["source"] == "self-reported" and receipt["status"] in (
        "queued",
        "running",
        "finished",
    )
    half = receipt["job_id"] + 0.5  # not rounded to a job id, as a Number with precision=0 was
    with pytest.raises(AppError, match=f"A job id is a whole number; found {half:g}"):
        client.predict(half, api_name="/submission_status")
    done = wait_finished(client, receipt["job_id"])
    assert done["status"] == "finished" and set(done["scores"]) == {
        "amibr_test",
        "atnorm_br",
        "atnorm_md",
    }
    board = client.predict("api model", "all", ["self-reported"], False, api_name="/leaderboard")
    (row,) = board
    assert row["model_name"] == "api model" and row["source"] == "self-reported"
    assert (row["team"], row["backbone"], row["pretraining"]) == ("team api", "resnet18", "")
    assert (row["method_type"], row["training_data"]) == ("end-to-end", "AMi-Br train")
    assert isinstance(row["amibr_test_ba"], float) and isinstance(row["amibr_test_auroc"], float)
    everything = client.predict(api_name="/leaderboard")  # every argument has a default
    with pytest.raises(AppError, match="Unknown method 'lora'; use all, end-to-end"):
        client.predict(method="lora", api_name="/leaderboard")  # not an empty board
    assert sum(r["source"] == "paper" for r in everything) == 17
    assert {r["source"] for r in everything} >= {"paper", "pathologist", "self-reported"}
    api = client.view_api(return_format="dict")["named_endpoints"]["/leaderboard"]
    assert all(p["parameter_has_default"] for p in api["parameters"])


def test_submit_checkpoint(client, app, tmp_path):
    archive = tmp_path / "model.zip"
    archive.write_bytes(zip_dir(tiny_checkpoint(tmp_path / "vit", "vit_tiny_test")))
    receipt = client.predict(
        handle_file(str(archive)), "api vit", *META[1:], api_name="/submit_checkpoint"
    )
    assert receipt["source"] == "verified"
    assert wait_finished(client, receipt["job_id"])["status"] == "finished"
    pickle = tmp_path / "bad.zip"
    import zipfile

    with zipfile.ZipFile(pickle, "w") as z:
        z.writestr("model.pt", b"\x80\x04K\x01.")
    with pytest.raises(AppError, match="pickle files .* are never loaded"):
        client.predict(handle_file(str(pickle)), *META, api_name="/submit_checkpoint")


def test_a_hub_model_id_on_an_offline_server_is_refused_clearly(client):
    with pytest.raises(AppError, match="offline \\(HF_HUB_OFFLINE is set\\).*Upload the"):
        client.predict(
            "lab/mitosis-model", "main", "", "hub vit", *META[1:], api_name="/submit_hub_model"
        )
    with pytest.raises(AppError, match="Give the Hub model id"):
        client.predict("", "main", "", "hub vit", *META[1:], api_name="/submit_hub_model")


def test_invalid_inputs_are_refused_in_the_handler(client, app, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id;prob_atypical\n")
    with pytest.raises(AppError, match="separated by semicolons"):
        client.predict(handle_file(str(bad)), *META, api_name="/submit_predictions")
    good = tmp_path / "good.csv"
    good.write_bytes(app.backend.predictions(12))
    with pytest.raises(AppError, match="Give the entry a model name"):
        client.predict(handle_file(str(good)), "", *META[1:], api_name="/submit_predictions")
    with pytest.raises(AppError, match="no submission with job id 99999"):
        client.predict(99999, api_name="/submission_status")


def test_private_files_are_never_served(app):
    settings = app.backend.settings
    for path in (settings.labels_dir / "labels.csv", settings.data_dir / "leaderboard.db"):
        assert path.is_file()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{app.url}gradio_api/file={path}")
        assert error.value.code in (403, 404)


def test_signed_in_identity_on_a_space(tmp_path):
    space = Space(Settings.from_env({"SPACE_ID": "org/space", "MITOSIS_DATA_DIR": str(tmp_path)}))
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        space.user(None)
    profile = gr.OAuthProfile(
        {"preferred_username": "bob", "name": "Bob", "picture": "", "profile": ""}
    )
    assert space.user(profile) == "bob"
    for reserved in ("maintainers", "paper", "pathologists"):  # the server's own accounts
        impostor = gr.OAuthProfile(
            {"preferred_username": reserved, "name": "", "picture": "", "profile": ""}
        )
        with pytest.raises(ReservedAccount, match=f"'{reserved}' is reserved"):
            space.user(impostor)
    local = Space(Settings.from_env({"MITOSIS_DATA_DIR": str(tmp_path)}))
    assert local.user(None) == "local"
    # signed out, the page's 3 s refreshes ask nothing and raise nothing
    assert submit_tab.follow_receipt(space, {"job_id": 1}) == (gr.skip(), gr.skip())
    assert submit_tab.my_submissions(space)[1] == "Sign in to see your submissions and allowance."


def test_handlers_turn_errors_into_messages(caplog):
    @user_facing
    def refuses():
        raise InvalidMetadata("'Team' is 201 characters long; the limit is 200.")

    @user_facing
    def breaks():
        raise KeyError("/srv/data/private/labels.csv")

    with pytest.raises(gr.Error, match="'Team' is 201 characters long"):
        refuses()
    with pytest.raises(gr.Error) as generic:
        breaks()
    assert generic.value.message == "Internal error; the maintainers can find it in the log."
    assert "handler breaks failed" in caplog.text and "labels.csv" in caplog.text


def raw_call(app, endpoint: str, data: list) -> dict:
    """One call over Gradio's HTTP API as any client may send it (no gradio_client upload)."""
    request = urllib.request.Request(
        f"{app.url}gradio_api/call{endpoint}",
        data=json.dumps({"data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )
    event = json.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
    stream = urllib.request.urlopen(f"{app.url}gradio_api/call{endpoint}/{event}", timeout=120)
    lines = stream.read().decode().splitlines()
    return {
        "event": lines[0].removeprefix("event: "),
        **json.loads(lines[1].removeprefix("data: ")),
    }


def test_a_server_path_a_url_or_too_few_inputs_get_a_sentence(app):
    labels = app.backend.settings.labels_dir
    secret = next(labels.rglob("*.csv"))  # the hidden labels: never readable through an upload
    meta = list(META)
    log_size = app.log.stat().st_size
    for sent in (
        str(secret),
        {"path": str(secret), "meta": {"_type": "gradio.FileData"}},
        {"path": "https://example.org/predictions.csv", "meta": {"_type": "gradio.FileData"}},
    ):
        answer = raw_call(app, "/submit_predictions", [sent, *meta, False])
        assert answer["event"] == "error" and "a path or URL on the server is not an upload" in (
            answer["error"] or ""
        ), answer
        crop = raw_call(app, "/classify", [sent, "Default model (shipped)", False, True])
        assert "is not an upload" in (crop["error"] or ""), crop
    short = raw_call(app, "/submit_hub_model", ["a" * 100_000, "main"])  # 2 of 13 inputs
    assert "takes 13 inputs; the call sent 2" in short["error"], short
    logged = app.log.read_bytes()[log_size:].decode(errors="replace")
    assert "Traceback" not in logged and len(logged) < 5000 and "aaaa" not in logged
