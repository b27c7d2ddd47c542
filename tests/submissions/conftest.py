from __future__ import annotations

import pytest

from tests.backend import Backend


@pytest.fixture
def backend(tmp_path):
    instance = Backend(tmp_path)
    yield instance
    instance.close()
