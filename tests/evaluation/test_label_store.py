"""The private label store checks itself when opened: a label changed in place, a typo or a
broken file is refused by name, never scored under the label-set hash of other labels."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from evaluation import bundle, release
from evaluation.bundle import LabelStore
from evaluation.errors import InvalidLabelStore
from tests.conftest import TINY_COUNTS


@pytest.fixture
def store(tiny_source, tmp_path):
    release.build_release(
        tiny_source, tmp_path / "public", tmp_path / "private", expected=TINY_COUNTS
    )
    return tmp_path / "private"


def edit_labels(store, change) -> None:
    labels = pd.read_csv(store / bundle.PRIVATE_LABELS_CSV, dtype=str, keep_default_na=False)
    change(labels).to_csv(store / bundle.PRIVATE_LABELS_CSV, index=False)


def flip_first(labels: pd.DataFrame) -> pd.DataFrame:
    labels.loc[0, "label"] = "normal" if labels.loc[0, "label"] == "atypical" else "atypical"
    return labels


def test_a_label_changed_in_place_is_refused_with_the_way_to_change_labels(store):
    before = LabelStore(store).label_set_hash
    edit_labels(store, flip_first)
    expected = (
        rf"^The private label store at {re.escape(str(store))} is refused: its labels hash to "
        rf"[0-9a-f]{{16}}…, not to the {before[:16]}… that its release.json states: labels.csv "
        r"changed after the release was built\. Labels change through the release: correct "
        r"them in the source and run `python -m evaluation.release` again"
    )
    with pytest.raises(InvalidLabelStore, match=expected):
        LabelStore(store)
    with pytest.raises(InvalidLabelStore):  # there but invalid is never taken for absent
        LabelStore.if_present(store)
    edit_labels(store, flip_first)  # restored as the release wrote it
    assert LabelStore(store).label_set_hash == before


def misspell(labels):
    labels.loc[2, "label"] = "atypcial"
    return labels


def train_row(labels):
    labels.loc[1, "split"] = "amibr_train"
    return labels


def twice(labels):
    return pd.concat([labels, labels.iloc[[3]]])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (misspell, "labels.csv has 1 row(s) whose label is not one of atypical, normal, the "
         "first 'atypcial' on line 4."),
        (train_row, "labels.csv has 1 row(s) whose split is not one of amibr_test, atnorm_br, "
         "atnorm_md, the first 'amibr_train' on line 3."),
        (twice, "labels.csv lists 1 image(s) more than once, the first again on line 19; each "
         "test crop has one label."),
        (lambda labels: labels.drop(columns="label"), "labels.csv has no label column."),
    ],
)  # fmt: skip
def test_a_malformed_store_is_refused_by_what_is_wrong(store, change, problem):
    ids = pd.read_csv(store / bundle.PRIVATE_LABELS_CSV, dtype=str)["image_id"]
    assert len(ids) == 17  # the tiny release's test crops: the repeated row is line 19
    edit_labels(store, change)
    with pytest.raises(InvalidLabelStore) as refused:
        LabelStore(store)
    assert refused.value.problem == problem
    assert str(refused.value).startswith(f"The private label store at {store} is refused: ")
    assert not any(image_id in str(refused.value) for image_id in ids)  # no hidden crop named


def test_an_unreadable_release_json_is_refused_by_name(store):
    (store / bundle.RELEASE_JSON).write_text("{not json")
    with pytest.raises(InvalidLabelStore, match=r"release.json cannot be read \(JSONDecodeError"):
        LabelStore(store)
    (store / bundle.RELEASE_JSON).write_text("{}")
    with pytest.raises(InvalidLabelStore, match=r"release.json cannot be read \(KeyError"):
        LabelStore(store)
    (store / bundle.RELEASE_JSON).write_text('{"label_set_hash": null}')
    with pytest.raises(InvalidLabelStore, match=r"release.json states no label-set hash \(None\)"):
        LabelStore(store)
