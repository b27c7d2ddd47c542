"""The Leaderboard tab: the board (``/leaderboard``), filters, a plot, details, exports."""

from __future__ import annotations

import gradio as gr

from leaderboard.board import shipped_model_status
from leaderboard.export import board_rows, to_csv, to_json
from leaderboard.tables import (
    SOURCES,
    board_legend,
    display_table,
    domain_plot_frame,
    entry_details,
)
from submissions.metadata import METHOD_TYPES
from ui.space import Space, user_facing


def leaderboard_tab(demo: gr.Blocks, space: Space) -> None:
    """Lay out the tab and wire its events (``/leaderboard`` is public)."""

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
        choices = [(f"#{e.rank or '–'} {e.model_name}", e.submission_id) for e in entries]
        return (
            domain_plot_frame(entries),
            gr.Dropdown(choices=choices, value=None),
            board_legend(entries),
        )

    @user_facing
    def detail(submission_id):
        return {} if submission_id is None else entry_details(space.board(), int(submission_id))

    @user_facing
    def export(kind: str) -> str:
        rows = board_rows(space.board())
        out = space.download_path(f"leaderboard.{kind}")
        out.write_text(to_csv(rows) if kind == "csv" else to_json(rows))
        return str(out)

    with gr.Tab("Leaderboard") as tab:
        notice = gr.Markdown(elem_id="board-notice")
        with gr.Row():
            search_box = gr.Textbox(label="Search model, team, backbone", elem_id="search")
            method_filter = gr.Dropdown(["all", *METHOD_TYPES], value="all", label="Method")
            source_filter = gr.CheckboxGroup(list(SOURCES), value=list(SOURCES), label="Entries")
            team_switch = gr.Checkbox(label="Best entry per team")
        board_table = gr.Dataframe(
            interactive=False, wrap=False, elem_id="board", datatype="str", max_height=600
        )
        legend = gr.Markdown(elem_id="board-legend")
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
        entry_json = gr.JSON(label="All released numbers and provenance", elem_id="entry-json")
        with gr.Row():
            csv_button = gr.Button("Download CSV")
            json_button = gr.Button("Download JSON")
            board_file = gr.File(label="Export", elem_id="board-file")

    filters = [search_box, method_filter, source_filter, team_switch]
    demo.load(leaderboard, filters, board_table, api_name="leaderboard")
    demo.load(
        user_facing(lambda: shipped_model_status(space.sessions)),
        None,
        notice,
        api_visibility="private",
    )
    gr.on(
        [search_box.submit, method_filter.change, source_filter.change, team_switch.change],
        leaderboard,
        filters,
        board_table,
        api_visibility="private",
    )
    gr.on(
        [demo.load, tab.select, team_switch.change],
        board_extras,
        team_switch,
        [domain_plot, entry_choice, legend],
        api_visibility="private",
    )
    entry_choice.change(detail, entry_choice, entry_json, api_visibility="private")
    csv_button.click(lambda: export("csv"), None, board_file, api_visibility="private")
    json_button.click(lambda: export("json"), None, board_file, api_visibility="private")
