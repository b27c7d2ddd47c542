"""The Space's services without a server."""

from __future__ import annotations

from settings import Settings
from ui.space import Space


def test_board_exports_are_one_file_per_version_not_per_page_view(tmp_path):
    space = Space(Settings.from_env({"MITOSIS_DATA_DIR": str(tmp_path)}))
    first = space.shared_download("leaderboard.csv", "rank,model\n1,a\n")
    again = space.shared_download("leaderboard.csv", "rank,model\n1,a\n")
    changed = space.shared_download("leaderboard.csv", "rank,model\n1,b\n")
    assert first == again and first != changed
    assert first.read_text() == "rank,model\n1,a\n" and first.name == "leaderboard.csv"
    assert len(list(first.parent.parent.iterdir())) == 2  # two versions, two folders
