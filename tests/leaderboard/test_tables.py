"""The board's views as pure functions of entries: filters, sorting, columns, plot, card."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from leaderboard.cards import entry_card, entry_curves
from leaderboard.columns import (
    EMPTY_BOARD,
    EXTRA_COLUMNS,
    MAIN_COLUMNS,
    NO_MATCH,
    TRACKS,
    BoardFilter,
    best_line,
    board_legend,
    display_table,
    domain_plot_frame,
    filter_entries,
    next_sort,
    plot_limits,
    sort_entries,
)
from leaderboard.errors import EntryNotOnBoard, UnknownFilter
from leaderboard.paper import paper_parameters, paper_rows
from leaderboard.ranking import Entry, rank_entries
from leaderboard.standings import StandingView
from models import create_model
from models._registry import get_model_cfg, list_models
from store.entry import EntryMetadata
from submissions.receipts import receipt_card, submissions_table


def entry(i, name, source, br, md, test=0.8, method="end-to-end", parameters=None, **meta):
    e = Entry(i, source, EntryMetadata(name, method_type=method, **meta), parameters=parameters)
    hidden = {"n": 746, "n_atypical": 128}
    e.scores = {
        "atnorm_br": {"ba": br, "ba_low": br - 0.05, "ba_high": br + 0.05, **hidden},
        "atnorm_md": {"ba": md, "ba_low": md - 0.04, "ba_high": md + 0.04, **hidden},
        "amibr_test": {
            "ba": test,
            "ba_low": test - 0.03,
            "ba_high": test + 0.03,
            "sensitivity": 0.7,
            "specificity": 0.9,
            "auroc": 0.88,
            "auroc_low": 0.85,
            "auroc_high": 0.91,
            "average_precision": 0.7,
            "brier": 0.12,
            "ece": 0.05,
            "n": 826,
            "n_atypical": 184,
        },
    }
    return e


@pytest.fixture
def board():
    entries = [
        entry(1, "small cnn", "verified", 0.80, 0.76, parameters=2_200_000, team="A"),
        entry(2, "big lora", "self-reported", 0.78, 0.74, method="LoRA", backbone="UNI"),
        entry(3, "probe", "verified", 0.70, 0.66, method="linear probe", parameters=300_000_000),
    ]
    return rank_entries(entries, StandingView(0.03, frozenset({1, 2, 3}), 1000, None))


def test_filters_apply_search_method_sources_and_tracks(board):
    names = lambda f: [e.model_name for e in filter_entries(board, f)]  # noqa: E731
    assert names(BoardFilter()) == ["small cnn", "big lora", "probe"]
    assert names(BoardFilter(search="UNI")) == ["big lora"]  # the backbone is searched too
    assert names(BoardFilter(method="linear probe")) == ["probe"]
    assert names(BoardFilter(sources=("verified",))) == ["small cnn", "probe"]
    assert names(BoardFilter(tracks=("no foundation model",))) == ["small cnn"]
    assert names(BoardFilter(tracks=("≤ 30 M parameters",))) == ["small cnn"]  # unknown: out
    reader = entry(4, "pathologist 1", "pathologist", 0.75, 0.70, method="")
    for track in TRACKS:  # readers, not models: the reference on every track
        kept = filter_entries([*board, reader], BoardFilter(tracks=(track,)))
        assert [e.model_name for e in kept] == ["small cnn", "pathologist 1"]
    assert filter_entries([reader], BoardFilter(method="LoRA")) == []


def test_each_team_s_best_entry_is_taken_among_the_entries_the_other_filters_keep():
    entries = [
        entry(1, "best of A", "verified", 0.80, 0.76, team="A"),
        entry(2, "second of A", "verified", 0.78, 0.74, method="linear probe", team="A"),
        entry(3, "best of B", "verified", 0.70, 0.66, team="B"),
    ]
    board = rank_entries(entries, StandingView(0.03, frozenset({1, 2, 3}), 1000, None))
    names = lambda f: [e.model_name for e in filter_entries(board, f)]  # noqa: E731
    assert names(BoardFilter(per_team=True)) == ["best of A", "best of B"]
    assert names(BoardFilter(method="linear probe")) == ["second of A"]
    assert names(BoardFilter(method="linear probe", per_team=True)) == ["second of A"]
    assert names(BoardFilter(search="of A", per_team=True)) == ["best of A"]


def test_the_table_shows_the_main_columns_first_and_extras_on_request(board):
    table = display_table(board)
    assert list(table.columns) == MAIN_COLUMNS and "id" not in table.columns
    assert list(table.iloc[0][:5]) == ["1", "small cnn", "0.78", "verified", "0.80 [0.75, 0.85]"]
    assert list(table.iloc[0][-2:]) == ["A", "end-to-end"]
    assert table.iloc[0]["rank range (95 %)"] == "1–2 of 3 tested · top group"
    assert table.iloc[2]["rank range (95 %)"] == "3 of 3 tested"
    wide = display_table(board, extra_columns=["parameters (M)", "backbone"])
    assert list(wide.columns) == MAIN_COLUMNS + ["backbone", "parameters (M)"]
    assert list(wide["parameters (M)"]) == ["2.2", "", "300.0"]
    assert set(EXTRA_COLUMNS).isdisjoint(MAIN_COLUMNS)
    empty = display_table([])
    assert len(empty) == 1 and empty.iloc[0]["model"] == NO_MATCH
    assert display_table([], empty=EMPTY_BOARD).iloc[0]["model"].startswith("Nothing on the board")


def test_a_header_click_sorts_one_column_and_a_third_click_restores_the_rank(board):
    sort = next_sort(None, "AtNorM-MD BA")
    assert sort == ("AtNorM-MD BA", True)  # scores: best first
    assert [e.model_name for e in sort_entries(board, sort)] == ["small cnn", "big lora", "probe"]
    sort = next_sort(sort, "AtNorM-MD BA")
    assert [e.model_name for e in sort_entries(board, sort)] == ["probe", "big lora", "small cnn"]
    assert next_sort(sort, "AtNorM-MD BA") is None
    by_name = next_sort(None, "model")  # names: A to Z first
    assert [e.model_name for e in sort_entries(board, by_name)] == [
        "big lora",
        "probe",
        "small cnn",
    ]
    by_size = ("parameters (M)", False)  # unknown sizes last
    assert [e.model_name for e in sort_entries(board, by_size)] == [
        "small cnn",
        "probe",
        "big lora",
    ]
    assert next_sort(by_size, "not a column") == by_size
    assert next_sort(("model", False), "model ▲") == ("model", True)  # the header as shown


def test_the_sorted_column_s_header_says_which_way(board):
    down = display_table(board, sort=("AtNorM-MD BA", True))
    assert "AtNorM-MD BA ▼" in down.columns and "AtNorM-MD BA" not in down.columns
    assert list(display_table(board, sort=("model", False)).columns)[1] == "model ▲"
    assert list(display_table(board).columns) == MAIN_COLUMNS


def test_the_best_line_names_the_top_group_and_says_paper_rows_are_untested(board):
    assert best_line(board) == (
        "**Best tested entries**, not told apart by the hidden sets (2 of 3 tested): "
        "**small cnn**; **big lora**."
    )
    alone = rank_entries(board[:1], StandingView(0.0, frozenset({1}), 1000, None))
    assert best_line(alone) == "**Best tested entry**: **small cnn**."
    paper = entry(4, "paper row", "paper", 0.82, 0.80)
    untested = rank_entries([paper], None)
    assert best_line(untested) == (
        "**Best tested entry**: none yet; no entry has been tested. Paper rows are published "
        "numbers, not tested here."
    )
    assert "Now one entry is tested: there is nothing" in board_legend(alone)
    assert "No entry has been tested yet." in board_legend(untested)
    assert "Paper row:" not in board_legend(untested)


def test_plot_frame_and_limits_hold_every_point(board):
    frame = domain_plot_frame(board)
    assert list(frame["model"]) == ["small cnn", "big lora", "probe"]
    x_lim, y_lim = plot_limits(frame)
    assert x_lim[0] <= frame["amibr_test_ba"].min() - 0.02 and x_lim[1] >= 0.82
    assert y_lim == [0.65, 0.8]
    assert domain_plot_frame([]).empty and plot_limits(domain_plot_frame([])) == (
        [0.5, 1],
        [0.5, 1],
    )


def test_the_entry_card_is_readable_and_escapes_what_submitters_write(board):
    board[1].meta = EntryMetadata(
        "big *lora* | x", method_type="LoRA", backbone="UNI", code_url="https://x.org/a_b"
    )
    card = entry_card(board, 2)
    assert card.startswith("### big \\*lora\\* \\| x")
    assert "| AtNorM-MD (hidden) | 0.74 [0.70, 0.78] | 746 (128) |" in card
    assert "sensitivity 0.700 · specificity 0.900" in card  # the public split: everything
    assert "code: <https://x.org/a_b>" in card and "{" not in card
    for vanished in (entry_card, entry_curves):  # a user error, not an internal one
        with pytest.raises(EntryNotOnBoard, match="Entry 9 is not on the board .any more."):
            vanished(board, 9)
    assert "Now 3 entries are tested" in board_legend(
        board
    ) and "more than 0.06 (the comparison's margin, 0.03, plus 0.03" in board_legend(board)
    small_margin = [dataclasses.replace(e, rank_margin=0.002) for e in board]
    assert (
        "differ by more than 0.03 (for rounding and release offsets; the comparison's own "
        "margin is under 0.01)." in board_legend(small_margin)
    )


def test_paper_parameter_counts_are_the_registry_s():
    registered = [n for n in list_models() if get_model_cfg(n).hub_id and not n.endswith("_cls")]
    by_hub = {f"hf-hub:{get_model_cfg(n).hub_id}": n for n in registered}
    counts = paper_parameters()
    assert set(counts) == set(paper_rows()["backbone"])
    for backbone, expected in counts.items():
        with torch.device("meta"):
            model = create_model(by_hub.get(backbone, backbone))
        assert sum(p.numel() for p in model.parameters()) == expected, backbone


def test_a_receipt_reads_as_words():
    report = {
        "job_id": 7,
        "model_name": "my *model*",
        "source": "self-reported",
        "status": "finished",
        "progress": "",
        "notice": "This file was already submitted: its job is shown, not a new one.",
        "queue_position": 0,
        "reason": "",
        "scores": {
            "amibr_test": {"ba": 0.7871, "ba_low": 0.75, "ba_high": 0.82},
            "atnorm_br": {"ba": 0.79, "ba_low": 0.74, "ba_high": 0.84},
            "atnorm_md": None,
        },
        "disclosure": "hidden-split scores withheld: not above this account's best",
    }
    card = receipt_card(report)
    assert card.startswith("**Job 7** · my \\*model\\* · self-reported · **finished**")
    assert "AMi-Br test BA: 0.7871 [0.7500, 0.8200] · AtNorM-Br BA: 0.79 [0.74, 0.84]" in card
    assert "AtNorM-MD BA: withheld" in card and "already submitted" in card
    assert "{" not in card and "job_id" not in card
    table = submissions_table([{**report, "created_at": "2026-11-27T12:00:00+00:00"}])
    assert list(table.iloc[0][["job", "status", "AtNorM-MD BA"]]) == [7, "finished", "withheld"]


def test_a_filter_no_entry_can_pass_is_refused_with_the_choices():
    with pytest.raises(
        UnknownFilter, match="Unknown method 'lora'; use all, end-to-end, .* or other"
    ):
        BoardFilter(method="lora")
    with pytest.raises(
        UnknownFilter, match="Unknown source 'papers'; use verified, .* or pathologist"
    ):
        BoardFilter(sources=("verified", "papers"))
    with pytest.raises(UnknownFilter, match="Unknown track 'small'"):
        BoardFilter(tracks=("small",))
