"""The Leaderboard tab: the board, its filters and columns, a plot, entry cards, exports.

One refresh function draws everything from the same filtered entries, so the table, the plot
and the entry list always agree. Clicking a column header sorts by it (see ``SORT_JS``);
``/leaderboard`` is an API-only endpoint that returns numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime

import gradio as gr

from leaderboard.board import last_updated, shipped_model_status
from leaderboard.cards import entry_card, entry_curves
from leaderboard.columns import (
    EMPTY_BOARD,
    EXTRA_COLUMNS,
    NO_MATCH,
    SOURCE_COLOURS,
    SOURCES,
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
    sort_note,
)
from leaderboard.export import board_rows, to_csv, to_json
from store.entry import METHOD_TYPES
from ui.space import Space, bind, user_facing

BOARD_HEIGHT_PX = 1200  # about 30 rows before the table scrolls inside itself
# Gradio's own column menu (⋮) sorts the display strings, so 0.77 would come below 0.5796:
# the board hides it and sorts on the server, by numbers, on a click on a header.
# Rank and model stay in view while the table scrolls sideways (Gradio's pinned_columns does
# not pin in this version): they stick, the rank at a fixed width so the model knows where.
# Long names, the mean and the kind wrap in capped widths, so that at a desk every
# balanced accuracy fits beside them; on a phone the first four columns (rank, model, hidden
# mean BA, kind) share the first screen.
RANK_PX = 50
DESK_COLUMNS = {2: 240, 3: 90, 4: 150}  # column number -> width in px
PHONE_COLUMNS = {2: 108, 3: 68, 4: 100}


def _cells(n: int, inside: str = "") -> str:
    return ", ".join(
        f"#board {cell}:nth-child({n}){inside}" for cell in ("th", "td", "[role=gridcell]")
    )


def _width(px: int) -> str:
    return (
        f"width: {px}px !important; min-width: {px}px !important; max-width: {px}px !important; "
        f"flex: 0 0 {px}px !important;"
    )


def _wrapped(columns: dict[int, int]) -> list[str]:
    return [
        f"{_cells(n)} {{ {_width(px)} }} {_cells(n, ' *')} "
        "{ white-space: normal !important; overflow-wrap: anywhere; }"
        for n, px in columns.items()
    ]


_STICKY = "position: sticky !important; z-index: 3; background: var(--table-even-background-fill);"
# a pinned body cell takes its row's stripe (the rows are opaque; the header row is not)
_PINNED_STRIPE = (
    "#board [role=row] > [role=gridcell]:nth-child(-n+2) { background: inherit !important; }"
)
BOARD_CSS = "\n".join(
    [
        "#board .cell-menu-button { display: none !important; }",
        f"{_cells(1)} {{ {_width(RANK_PX)} {_STICKY} left: 0; }}",
        f"{_cells(2)} {{ {_STICKY} left: {RANK_PX}px; }}",
        _PINNED_STRIPE,
        *_wrapped(DESK_COLUMNS),
        "@media (max-width: 600px) {",
        *_wrapped(PHONE_COLUMNS),
        "}",
    ]
)

# A click on a header of the board asks the server to sort by that column: the column's
# name goes to a hidden textbox (with the time, so that a second click is a change too).
SORT_JS = r"""
() => {
  document.addEventListener("click", (event) => {
    const header = event.target.closest("#board thead th");
    if (!header || event.target.closest("button")) return;
    const box = document.querySelector("#sort-request textarea, #sort-request input");
    if (!box) return;
    box.value = header.innerText.split("\n")[0].trim() + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }, true);
}
"""


@user_facing
def refresh(space: Space, search, method, sources, tracks, per_team, extras, sort):
    """Every view of the board, from one filtered list of entries."""
    board = space.board()
    keep = BoardFilter(search or "", method, tuple(sources), tuple(tracks), bool(per_team))
    kept = sort_entries(filter_entries(board, keep), sort)
    frame = domain_plot_frame(kept)
    x_lim, y_lim = plot_limits(frame)
    choices = [(f"#{e.rank or '–'} {e.model_name}", e.submission_id) for e in kept]
    rows = board_rows(kept)  # the downloads hold what the table shows, in its order
    shown = f"{len(rows)} of {len(board)} entries" if len(rows) < len(board) else "all entries"
    csv_path = space.shared_download("leaderboard.csv", to_csv(rows))
    json_path = space.shared_download("leaderboard.json", to_json(rows))
    updated = last_updated(space.sessions)
    stamp = updated.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if updated else "never"
    table = display_table(
        kept, extra_columns=extras, empty=NO_MATCH if board else EMPTY_BOARD, sort=sort
    )
    return (
        table,
        gr.ScatterPlot(value=frame, x_lim=x_lim, y_lim=y_lim),
        gr.Dropdown(choices=choices, value=None),
        board_legend(board),
        gr.DownloadButton(f"Download CSV ({shown}, as shown)", value=str(csv_path)),
        gr.DownloadButton(f"Download JSON ({shown}, as shown)", value=str(json_path)),
        f"Last updated {stamp} · shown at {datetime.now(UTC):%H:%M:%S} UTC. " + sort_note(sort),
        best_line(board),
    )


@user_facing
def resort(space: Space, request: str, current, *filters):
    """A click on a column header: the new sort, and every view under it."""
    sort = next_sort(current, request.rsplit("|", 1)[0])
    return sort, *refresh(space, *filters, sort)


@user_facing
def card(space: Space, submission_id):
    """One entry's card, with its ROC and reliability curves on AMi-Br test."""
    if submission_id is None:
        hidden = gr.LinePlot(value=None, visible=False)
        return (
            "Choose an entry to see its numbers, its description and where they come from.",
            hidden,
            hidden,
        )
    board = space.board()
    roc, reliability = entry_curves(board, int(submission_id))
    drawn = not roc.empty  # paper and pathologist rows have no per-crop predictions to draw
    return (
        entry_card(board, int(submission_id)),
        gr.LinePlot(value=roc, visible=drawn),
        gr.LinePlot(value=reliability, visible=drawn),
    )


@user_facing
def board_notice(space: Space) -> str:
    """Why the shipped model is not on the board yet, if it is not."""
    return shipped_model_status(space.sessions)


def leaderboard_tab(demo: gr.Blocks, space: Space) -> None:
    """Lay out the tab and wire its events (all private: the API is :func:`leaderboard_api`)."""
    with gr.Tab("Leaderboard") as tab:
        notice = gr.Markdown(elem_id="board-notice")
        best = gr.Markdown(elem_id="board-best")
        updated = gr.Markdown(elem_id="board-updated")
        with gr.Accordion("Search, filters and more columns", open=False, elem_id="board-filters"):
            with gr.Row():
                search_box = gr.Textbox(
                    label="Search model, team, backbone", elem_id="search", scale=2
                )
                method_filter = gr.Dropdown(["all", *METHOD_TYPES], value="all", label="Method")
                team_switch = gr.Checkbox(label="Best entry per team")
            with gr.Row():
                source_filter = gr.CheckboxGroup(
                    list(SOURCES), value=list(SOURCES), label="Entries", elem_id="sources"
                )
                track_filter = gr.CheckboxGroup(list(TRACKS), label="Tracks", elem_id="tracks")
            extra_columns = gr.CheckboxGroup(
                EXTRA_COLUMNS, label="More columns", elem_id="more-columns"
            )
        board_table = gr.Dataframe(
            interactive=False,
            wrap=False,
            elem_id="board",
            datatype="str",
            max_height=BOARD_HEIGHT_PX,  # BOARD_CSS keeps rank and model in view sideways
        )
        sort_request = gr.Textbox(visible="hidden", elem_id="sort-request")
        sort_state = gr.State(None)
        legend = gr.Markdown(elem_id="board-legend")
        domain_plot = gr.ScatterPlot(
            x="amibr_test_ba",
            y="hidden_mean_ba",
            color="source",
            color_map=SOURCE_COLOURS,
            x_title="AMi-Br test BA (in-domain)",
            y_title="hidden mean BA",
            x_axis_format=".2f",
            y_axis_format=".2f",
            tooltip=["model", "amibr_test_ba", "hidden_mean_ba"],
            title="In-domain vs out-of-domain BA",  # short: whole on a phone
            elem_id="domain-plot",
        )
        entry_choice = gr.Dropdown(label="Details of one entry", elem_id="entry-choice")
        entry_view = gr.Markdown(elem_id="entry-card")
        with gr.Row():
            plot_style = {"x": "x", "y": "y", "color": "curve", "x_lim": [0, 1], "y_lim": [0, 1]}
            roc_plot = gr.LinePlot(
                **plot_style,
                visible=False,
                x_title="false-positive rate",
                y_title="true-positive rate",
                title="ROC on AMi-Br test (public labels)",
                elem_id="roc-plot",
            )
            reliability_plot = gr.LinePlot(
                **plot_style,
                visible=False,
                x_title="mean P(atypical) in the bin",
                y_title="fraction atypical",
                title="Reliability on AMi-Br test (public labels)",
                elem_id="reliability-plot",
            )
        gr.Markdown(
            "Curves are drawn on AMi-Br test only: on a hidden set, a curve over a submitter's "
            "own scores would give away the labels in score order."
        )
        with gr.Row():
            csv_button = gr.DownloadButton("Download CSV", elem_id="download-csv")
            json_button = gr.DownloadButton("Download JSON", elem_id="download-json")

    filters = [search_box, method_filter, source_filter, track_filter, team_switch, extra_columns]
    views = [board_table, domain_plot, entry_choice, legend, csv_button, json_button, updated, best]
    demo.load(None, None, None, js=SORT_JS)
    demo.load(bind(board_notice, space), None, notice, api_visibility="private")
    gr.on(
        [
            demo.load,
            tab.select,
            search_box.submit,
            method_filter.change,
            source_filter.change,
            track_filter.change,
            team_switch.change,
            extra_columns.change,
        ],
        bind(refresh, space),
        [*filters, sort_state],
        views,
        api_visibility="private",
    )
    sort_request.change(
        bind(resort, space),
        [sort_request, sort_state, *filters],
        [sort_state, *views],
        api_visibility="private",
    )
    entry_choice.change(
        bind(card, space),
        entry_choice,
        [entry_view, roc_plot, reliability_plot],
        api_visibility="private",
    )


@user_facing
def leaderboard(
    space: Space,
    search: str = "",
    method: str = "all",
    sources: list[str] | None = None,
    per_team: bool = False,
) -> list[dict]:
    """The board as numbers: one dict per entry (released values only), in rank order.

    Args:
        space: the app's services (bound; not an API argument).
        search: text found in the model name, team, backbone or pretraining.
        method: end-to-end, linear probe, LoRA, other, or all.
        sources: any of verified, self-reported, paper, pathologist (default: all).
        per_team: only each team's best entry.
    """
    keep = BoardFilter(search or "", method or "all", tuple(sources or SOURCES), (), bool(per_team))
    return board_rows(filter_entries(space.board(), keep))


def leaderboard_api(space: Space) -> None:
    """``/leaderboard``: the board as numbers (call after the last tab: it is not a tab)."""
    gr.api(bind(leaderboard, space), api_name="leaderboard")
