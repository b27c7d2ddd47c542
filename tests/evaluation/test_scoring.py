from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from evaluation.bundle import LabelStore, PublicBundle
from evaluation.errors import InvalidPredictionFile, LabelsUnavailable
from evaluation.prediction_file import as_prediction_file, read_predictions
from evaluation.score import main as score_main
from evaluation.scoring import load_labels, score_predictions
from settings import REPO_ROOT

MANIFEST = pd.DataFrame(
    {
        "image_id": ["a1", "a2", "a3", "b1", "b2", "b3"],
        "split": ["amibr_test"] * 3 + ["atnorm_br"] * 3,
    }
)
GOOD = "image_id,prob_atypical\na1,0.9\na2,0.1\na3,0.2\nb1,0.6\nb2,0.4\nb3,0.5\n"


def read(text: str | bytes, **kwargs):
    data = text.encode() if isinstance(text, str) else text
    return read_predictions(data, MANIFEST, splits=["amibr_test", "atnorm_br"], **kwargs)


def test_valid_file_and_threshold_rule():
    predictions = read(GOOD)
    assert list(predictions.image_ids) == ["a1", "a2", "a3", "b1", "b2", "b3"]
    assert list(predictions.predicted) == [1, 0, 0, 1, 0, 1]  # prob >= 0.5 is atypical
    assert not predictions.has_labels


def test_label_column_overrides_threshold_and_accepts_any_case():
    text = GOOD.replace("prob_atypical\n", "prob_atypical,label\n")
    rows = text.splitlines()
    rows[1:] = [
        f"{r},{lab}"
        for r, lab in zip(
            rows[1:], ["Normal", "atypical", "normal", "NORMAL", "atypical", "normal"], strict=True
        )
    ]
    predictions = read("\n".join(rows))
    assert list(predictions.predicted) == [0, 1, 0, 0, 1, 0] and predictions.has_labels


def test_utf8_bom_blank_lines_crlf_and_column_order_are_accepted():
    text = (
        "\ufeffprob_atypical,image_id\r\n"
        + "\r\n".join(
            f"{p},{i}"
            for i, p in [
                ("a1", 0.9),
                ("a2", 0.1),
                ("a3", 0.2),
                ("b1", 0.6),
                ("b2", 0.4),
                ("b3", 0.5),
            ]
        )
        + "\r\n\r\n"
    )
    assert list(read(text).predicted) == [1, 0, 0, 1, 0, 1]


def test_only_the_requested_splits_must_be_complete():
    text = "image_id,prob_atypical\na1,0.9\na2,0.1\na3,0.2\n"
    assert len(read_predictions(text.encode(), MANIFEST, splits=["amibr_test"]).image_ids) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "The file is empty"),
        (b"  \n\n", "The file is empty"),
        (b",\n,\n", "The file has no header"),
        (b"image_id,prob_atypical\n" + b"a" * 200_000 + b",0.5\n", "not a well-formed CSV"),
        (b"image_id,prob_atypical\n", "a header but no rows"),
        ("image_id,prob_atypical\na1,0.5\n".encode("utf-16"), "UTF-16-encoded"),
        ("image_id,prob\u00e4\n".encode("latin-1"), r"not valid UTF-8 \(byte 0xe4 at offset 13\)"),
        (b"image_id;prob_atypical\na1;0.5\n", "separated by semicolons, not commas"),
        (b"image_id\tprob_atypical\na1\t0.5\n", "separated by tabs"),
        (
            b"image_id,probability\na1,0.5\n",
            "lacks the column.s. prob_atypical; found 'image_id', 'probability'",
        ),
        (b"id,prob_atypical\na1,0.5\n", "lacks the column.s. image_id"),
        (b"image_id,prob_atypical,split\na1,0.5,x\n", "unknown column.s. 'split'"),
        (b"image_id,prob_atypical,image_id\na1,0.5,a1\n", "repeats a column name"),
        (b"image_id,prob_atypical\na1,0.5,7\n", "Line 2 has 3 field.s. but the header has 2"),
        (
            b"image_id,prob_atypical\na1,0.5\na2,high\n",
            "prob_atypical on line 3 is 'high', not a number",
        ),
        (b"image_id,prob_atypical\na1,\n", "prob_atypical on line 2 is '', not a number"),
        (b"image_id,prob_atypical\na1,NaN\n", "line 2 is NaN or infinite"),
        (
            b"image_id,prob_atypical\na1,0.1\na2,inf\n",
            r"line 3 is NaN or infinite; 1 row.s. are affected. Every probability must be "
            r"in \[0, 1\].$",  # named once, not also as outside [0, 1]
        ),
        (b"image_id,prob_atypical\na1,1.7\na2,-2\n", r"line 2 is 1.7, outside \[0, 1\]; 2 row.s."),
        (  # every kind at once: one round of fixing
            b"image_id,prob_atypical\na1,1.5\na2,0.2\na3,abc\n",
            r"line 4 is 'abc', not a number; 1 row.s. are affected. Also: prob_atypical on line "
            r"2 is 1.5, outside \[0, 1\]; 1 row.s. are affected.",
        ),
        (
            b"image_id,prob_atypical,label\na1,0.5,mitosis\n",
            "label on line 2 is 'mitosis'; it must be 'atypical' or 'normal'",
        ),
        (b"image_id,prob_atypical\n,0.5\n", "image_id on line 2 is empty"),
        (
            b"image_id,prob_atypical\na1,0.5\na2,0.5\na1,0.4\n",
            "1 image_id.s. appear more than once .the first repeat is on line 4.",
        ),
        (
            b"image_id,prob_atypical\nAMi-Br/Normal/1.png,0.5\n",
            "1 row.s. have an image_id that is not in the public test manifest "
            ".the first, on line 2: 'AMi-Br/Normal/1.png'.",
        ),
        (GOOD.replace("b2,0.4\n", "").encode(), "no row for 1 of the 3 crops of split 'atnorm_br'"),
        (
            b"PK\x03\x04" + bytes(64),
            "The file is a zip archive .an Excel .xlsx workbook, or a zipped checkpoint., not a "
            "CSV. Save a sheet as 'CSV UTF-8'; a checkpoint goes to Submit checkpoint",
        ),
        (b"\xd0\xcf\x11\xe0" + bytes(64), "The file is an old Excel .xls workbook, not a CSV"),
        (
            b"image,prob_atypical,label\na1.png,0.5,atypical\n",
            "The header has 'image', not 'image_id': this is models.predict's table. Run it "
            "with --format submission",
        ),
    ],
)
def test_every_fault_has_its_own_message(content, message):
    with pytest.raises(InvalidPredictionFile, match=message):
        read(content)


def test_old_mac_and_windows_line_ends_read_like_unix_ones():
    for newline in ("\r", "\r\n"):
        predictions = read(GOOD.replace("\n", newline))
        assert list(predictions.image_ids) == ["a1", "a2", "a3", "b1", "b2", "b3"]


def test_a_zipped_file_is_named_before_its_size_is_judged(tmp_path):
    path = tmp_path / "checkpoint.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(6 * 2**20))
    with pytest.raises(InvalidPredictionFile, match="The file is a zip archive"):
        read_predictions(path, MANIFEST, max_bytes=5 * 2**20)


def test_missing_hidden_ids_are_reported_as_counts_only():
    with pytest.raises(InvalidPredictionFile) as error:
        read(GOOD.replace("b2,0.4\n", "").replace("b3,0.5\n", ""))
    assert "no row for 2 of the 3 crops of split 'atnorm_br'" in str(error.value)
    assert "b2" not in str(error.value) and "b3" not in str(error.value)


def test_more_rows_than_test_crops_are_refused_before_parsing():
    blank_lines = GOOD.replace("\n", "\n\n\n")  # blank lines do not count as rows
    assert len(read(blank_lines).image_ids) == 6
    with pytest.raises(InvalidPredictionFile, match="the first repeat is on line 8"):
        read(GOOD + "a1,0.3\n")  # a few extra rows: named for what they are
    with pytest.raises(InvalidPredictionFile, match="has 13 rows after its header; the test set"):
        read(GOOD + "a1,0.3\n" * 7)
    million = "image_id,prob_atypical\n" + "a1,0.5\n" * 1_000_000  # 7 MB, a cheap refusal
    started = time.process_time()
    with pytest.raises(InvalidPredictionFile, match="1,000,000 rows after its header"):
        read(million, max_bytes=8 * 2**20)
    assert time.process_time() - started < 1.0  # parsing it took 4.9 s


def test_size_limit_is_checked_before_reading(tmp_path):
    with pytest.raises(InvalidPredictionFile, match=r"The file is 65 bytes; .* at most 10 bytes"):
        read(GOOD, max_bytes=10)
    path = tmp_path / "big.csv"
    with open(path, "wb") as f:  # 300 MB that were never written: refused by its size alone
        f.truncate(300 * 2**20)
    with pytest.raises(InvalidPredictionFile, match="The file is 300 MB; .* at most 5 MB"):
        read_predictions(path, MANIFEST, max_bytes=5 * 2**20)
    path.write_bytes(b"x" * (5 * 2**20 + 1))
    with pytest.raises(
        InvalidPredictionFile, match=r"5,242,881 bytes; .* at most 5,242,880 bytes \(5 MB\)"
    ):
        read_predictions(path, MANIFEST, max_bytes=5 * 2**20)


def flipped_predictions(real_release, seed=0, flip_rate=0.15):
    """Probabilities from the true labels, a known fraction of them flipped."""
    store = LabelStore(real_release.labels_dir)
    rows = []
    rng = np.random.default_rng(seed)
    for truth in store.all_labels().values():
        prob = np.where(
            truth.y_true == 1,
            0.5 + rng.random(truth.y_true.size) / 2,
            rng.random(truth.y_true.size) / 2,
        )
        flip = rng.random(truth.y_true.size) < flip_rate
        prob[flip] = 1 - prob[flip]
        rows.append(
            pd.DataFrame(
                {
                    "image_id": truth.image_ids,
                    "prob_atypical": prob.round(6),
                    "y_true": truth.y_true,
                    "split": truth.split,
                }
            )
        )
    return pd.concat(rows).sample(frac=1, random_state=seed)


def test_release_then_score_equals_scikit_learn(real_release, tmp_path):
    frame = flipped_predictions(real_release)
    path = tmp_path / "predictions.csv"
    frame[["image_id", "prob_atypical"]].to_csv(path, index=False)
    env = {**os.environ, "MITOSIS_DATA_DIR": str(real_release.data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.score", str(path), "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["label_set_hash"] == LabelStore(real_release.labels_dir).label_set_hash
    assert set(report["splits"]) == {"amibr_test", "atnorm_br", "atnorm_md"}
    for split, part in frame.groupby("split"):
        got = report["splits"][split]
        pred = (part["prob_atypical"] >= 0.5).astype(int)
        expected = skm.balanced_accuracy_score(part["y_true"], pred)
        ba, auc = got["balanced_accuracy"], got["auroc"]
        assert abs(ba["estimate"] - expected) < 1e-9
        assert (
            abs(auc["estimate"] - skm.roc_auc_score(part["y_true"], part["prob_atypical"])) < 1e-9
        )
        assert (
            ba["low"] < ba["estimate"] < ba["high"] and auc["low"] < auc["estimate"] < auc["high"]
        )
        assert got["n"] == len(part) and got["n_atypical"] == part["y_true"].sum()
        assert 0.8 < expected < 0.9  # 15 % flips


def test_table_output_and_public_split_without_private_store(
    real_release, tmp_path, monkeypatch, capsys
):
    """``python -m evaluation.score`` through its entry point, in this process."""
    frame = flipped_predictions(real_release, seed=1)
    path = tmp_path / "predictions.csv"
    frame[["image_id", "prob_atypical"]].to_csv(path, index=False)
    monkeypatch.setenv("MITOSIS_DATA_DIR", str(real_release.data_dir))
    monkeypatch.setenv("MITOSIS_LABELS_DIR", str(tmp_path / "no-labels"))

    def run(*extra):
        code = score_main([str(path), *extra])
        return code, *capsys.readouterr()

    code, out, err = run()
    assert code == 0 and "only AMi-Br test is scored: no private label store" in err
    assert out.count("\n") == 2 and "AMi-Br test   826" in out
    code, _, err = run("--split", "atnorm_md")
    assert code == 2 and "private label store is not at" in err
    frame[frame["split"] != "atnorm_br"][["image_id", "prob_atypical"]].to_csv(path, index=False)
    code, out, err = run()  # without the labels, still checked as the server will check it
    assert code == 2 and out == ""
    assert "no row for 746 of the 746 crops of split 'atnorm_br'" in err
    assert run("--split", "amibr_test")[0] == 0  # a file for the public split alone


def test_score_names_a_missing_file(tmp_path, capsys):
    assert score_main([str(tmp_path / "predictons.csv")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'predictons.csv'} is not there; give the prediction CSV.\n"
    )
    assert score_main([str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder" in capsys.readouterr().err


def test_load_labels_needs_the_store_for_hidden_splits(real_release, tmp_path):
    bundle = PublicBundle(real_release.public_dir)
    labels, label_hash = load_labels(bundle, tmp_path, ["amibr_test"])
    assert label_hash is None and labels["amibr_test"].y_true.sum() == 184
    with pytest.raises(LabelsUnavailable, match="Hidden splits .AtNorM-Br, AtNorM-MD."):
        load_labels(bundle, tmp_path, ["amibr_test", "atnorm_br"])


def test_score_predictions_uses_the_label_column(real_release):
    bundle = PublicBundle(real_release.public_dir)
    labels, _ = load_labels(bundle, real_release.labels_dir, ["atnorm_br"])
    truth = labels["atnorm_br"]
    text = "image_id,prob_atypical,label\n" + "".join(
        f"{i},0.5,{'atypical' if y else 'normal'}\n"
        for i, y in zip(truth.image_ids, truth.y_true, strict=True)
    )
    predictions = read_predictions(text.encode(), bundle.manifest, splits=["atnorm_br"])
    score = score_predictions(predictions, labels)["atnorm_br"]
    assert score.balanced_accuracy.estimate == 1.0 and score.auroc.estimate == 0.5
    assert score.confusion.tp == 128 and score.confusion.tn == 618


def test_answers_named_by_test_crop_id_become_a_prediction_file():
    manifest = pd.DataFrame({"image_id": ["aa01", "bb02", "cc03"]})
    table = pd.DataFrame(
        {
            "image": ["aa01.png", "bb02.png"],
            "prob_atypical": [0.9, 0.1],
            "label": ["atypical", "normal"],
        }
    )
    frame = as_prediction_file(table, manifest)
    assert list(frame.columns) == ["image_id", "prob_atypical", "label"]
    assert list(frame["image_id"]) == ["aa01", "bb02"]
    other = table.assign(image=["aa01.png", "holiday.jpg"])
    assert as_prediction_file(other, manifest) is None
    assert as_prediction_file(table.iloc[:0], manifest) is None
