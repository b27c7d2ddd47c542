"""Opening the SQLite store beside other processes that hold its locks."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import func, select

from store.engine import open_store
from store.schema import Submission


@pytest.mark.slow  # holds a lock past SQLite's default 5 s wait
def test_a_new_connection_waits_for_a_writer_instead_of_failing(tmp_path):
    """A worker started while another process wrote for longer than 5 s died 'database is
    locked' at its first statement: the busy timeout came after the switch to WAL."""
    path = tmp_path / "board.db"
    url = f"sqlite:///{path}"
    sessions = open_store(url)  # created and migrated; this engine has not connected yet
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=DELETE")  # as before any app connected: WAL to switch on
    writer.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(6.0, writer.execute, args=("COMMIT",))
    released.start()
    try:
        with sessions() as session:  # its first connection, while the writer holds the file
            assert session.scalar(select(func.count(Submission.id))) == 0
    finally:
        released.join()
        writer.close()
