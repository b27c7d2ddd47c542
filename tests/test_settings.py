from __future__ import annotations

from argparse import ArgumentTypeError
from pathlib import Path

import pytest

from settings import (
    INTERNAL_VARIABLES,
    REPO_ROOT,
    Settings,
    SettingsError,
    at_least,
    command_settings,
)


def test_defaults_work_offline_from_a_fresh_clone():
    settings = Settings.from_env({})
    assert settings.data_dir == REPO_ROOT / "var"
    assert settings.public_dir == REPO_ROOT / "var" / "public"
    assert settings.labels_dir == REPO_ROOT / "var" / "private"
    assert settings.source_dir == REPO_ROOT.parent / "shared" / "data" / "ami-br-benchmark"
    assert (settings.server_name, settings.server_port) == ("127.0.0.1", 7860)
    assert settings.max_prediction_file_bytes == 5 * 2**20
    assert settings.bootstrap_resamples == 2000


def test_environment_overrides(tmp_path: Path):
    settings = Settings.from_env(
        {
            "MITOSIS_DATA_DIR": str(tmp_path),
            "MITOSIS_LABELS_DIR": str(tmp_path / "secret"),
            "MITOSIS_MAX_PREDICTION_FILE_MB": "2",
            "MITOSIS_BOOTSTRAP_RESAMPLES": "5000",
            "GRADIO_SERVER_NAME": "0.0.0.0",
            "GRADIO_SERVER_PORT": "8080",
            "MITOSIS_CPU_GFLOPS": "12.5",
            "MITOSIS_START_WORKER": "Off",
            "MITOSIS_QUEUE_URL": "redis://queue.lab:6379/2",
            "MITOSIS_LOG_LEVEL": "Warning",
        }
    )
    assert (settings.cpu_gflops, settings.start_worker) == (12.5, False)
    assert settings.log_level == "warning"
    assert settings.queue_url == "redis://queue.lab:6379/2"
    assert settings.public_dir == tmp_path / "public"
    assert settings.labels_dir == tmp_path / "secret"
    assert settings.max_prediction_file_bytes == 2 * 2**20
    assert (settings.bootstrap_resamples, settings.server_port) == (5000, 8080)
    assert settings.server_name == "0.0.0.0"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("GRADIO_SERVER_PORT", "http", "GRADIO_SERVER_PORT must be a whole number"),
        ("MITOSIS_BOOTSTRAP_RESAMPLES", "100", "MITOSIS_BOOTSTRAP_RESAMPLES must be at least 1000"),
        ("MITOSIS_MAX_PREDICTION_FILE_MB", "0", "at least 1; found 0"),
        (
            "MITOSIS_QUEUE_URL",
            "sqlit:///q.db",
            "must be sqlite:///FILE, redis://HOST.* or rediss://",
        ),
        ("MITOSIS_CPU_GFLOPS", "-3", "MITOSIS_CPU_GFLOPS must be a number above 0; found '-3'"),
        ("MITOSIS_CPU_GFLOPS", "nan", "must be a number above 0; found 'nan'"),
        ("MITOSIS_START_WORKER", "maybe", "must be 1/true/yes/on or 0/false/no/off"),
        ("MITOSIS_LOG_LEVEL", "verbose", "must be one of debug, info, warning, error"),
        (
            "MITOSIS_RELEASE_FLOOR",
            "1.5",
            "RELEASE_FLOOR must be a number from 0.5 to 1; found '1.5'",
        ),
    ],
)
def test_bad_values_are_refused_by_name(name, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


def test_a_command_line_number_is_checked_against_its_range():
    assert at_least(1)("3") == 3 and isinstance(at_least(0.0)("2"), float)
    assert at_least(0.0, above=True)("0.5") == 0.5 and at_least(0, below=5)("4") == 4
    cases = [
        (at_least(1), "0", "0 is out of range: it must be at least 1"),
        (at_least(0.0, above=True), "0", "0 is out of range: it must be above 0"),
        (at_least(1, below=101), "101", "it must be at least 1 and below 101"),
    ]
    for check, text, message in cases:
        with pytest.raises(ArgumentTypeError, match=message):
            check(text)
    with pytest.raises(ValueError):  # argparse reports it as "invalid int value: 'x'"
        at_least(1)("x")
    for text in ("nan", "inf"):  # nan passes every comparison; neither is a rate or a decay
        with pytest.raises(ArgumentTypeError, match=f"{text} is not a finite number"):
            at_least(0.0)(text)
    assert at_least(1).__name__ == "int" and at_least(0.5).__name__ == "float"


def test_a_command_stops_with_one_sentence_on_a_setting_it_cannot_use(monkeypatch, capsys):
    monkeypatch.setenv("MITOSIS_BOOTSTRAP_RESAMPLES", "10")
    with pytest.raises(SystemExit) as stopped:
        command_settings("python -m evaluation.score")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "python -m evaluation.score: error: MITOSIS_BOOTSTRAP_RESAMPLES must be at least 1000; "
        "found 10.\n"
    )
    monkeypatch.delenv("MITOSIS_BOOTSTRAP_RESAMPLES")
    assert isinstance(command_settings("python -m evaluation.score"), Settings)


def test_a_misspelled_setting_is_refused_with_the_setting_it_resembles():
    """A typo would leave its setting at the default: a worker on another database, say."""
    with pytest.raises(
        SettingsError,
        match=r"^MITOSIS_DATABSE_URL is not a setting \(did you mean MITOSIS_DATABASE_URL\?\); ",
    ):
        Settings.from_env({"MITOSIS_DATABSE_URL": "sqlite:////tmp/x.db"})
    with pytest.raises(SettingsError, match=r"^MITOSIS_COLOUR is not a setting; every setting"):
        Settings.from_env({"MITOSIS_COLOUR": "blue"})
    Settings.from_env({"MITOSIS_PARENT_PID": "1", "MITOSIS_TEST_RUN": "run"})  # set for us


def test_every_setting_is_in_the_operations_table(monkeypatch):
    read = []
    monkeypatch.setattr("settings._refuse_unknown", lambda env, known: read.extend(sorted(known)))
    Settings.from_env({})
    table = (REPO_ROOT / "docs" / "operations.md").read_text()
    ours = [n for n in read if n.startswith("MITOSIS_") and n not in INTERNAL_VARIABLES]
    assert len(ours) > 25 and [n for n in ours if f"| `{n}` " not in table] == []
