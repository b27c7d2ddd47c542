"""Shared fixtures: a tiny synthetic source release and the real benchmark release.

Every process the run starts ends with it (``tests/reaper.py``).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach the network

import csv
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.release import build_release
from settings import Settings
from store.schema import utcnow
from tests import reaper

TINY_COUNTS = {
    "amibr_train": (2, 4),
    "amibr_test": (2, 3),
    "atnorm_br": (2, 3),
    "atnorm_md": (3, 4),
}


def write_png(path: Path, seed: int, size=(128, 128), mode="RGB") -> None:
    """A random image, different for every seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


H_AND_E_RANGES = ((150, 256), (40, 150), (120, 240))  # red, green, blue


def stained_noise(seed: int = 0, size: int = 128) -> np.ndarray:
    """Random pinks and violets, as H&E stains them (green is never the strongest channel)."""
    rng = np.random.default_rng(seed)
    channels = [rng.integers(low, high, (size, size)) for low, high in H_AND_E_RANGES]
    return np.dstack(channels).astype(np.uint8)


def make_tiny_source(root: Path) -> Path:
    """A folder laid out like the public AMi-Br release, with TINY_COUNTS crops."""
    seed = 0
    train_rows = []
    for split, folder in (
        ("amibr_train", "AMi-Br"),
        ("amibr_test", "AMi-Br"),
        ("atnorm_br", "AtNorM-Br"),
        ("atnorm_md", "AtNorM-MD"),
    ):
        n_atypical, n_normal = TINY_COUNTS[split]
        for label, n in (("Atypical", n_atypical), ("Normal", n_normal)):
            for i in range(n):
                seed += 1
                name = {"AMi-Br": f"MIDOG21_{seed}.png", "AtNorM-Br": f"{i + 1}.png"}.get(
                    folder, f"{seed}.png"
                )  # AtNorM-Br reuses names across classes, as the real one
                write_png(root / folder / label / name, seed)
                if split == "amibr_train":
                    train_rows.append(
                        {"slide": f"{seed % 3:03d}.tiff", "dataset_uid": name, "final_label": label}
                    )
    with open(root / "amibr_train_split.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["slide", "dataset_uid", "final_label"])
        writer.writeheader()
        writer.writerows(train_rows)
    with open(root / "AtNorM-MD_expert_votes.csv", "w", newline="") as f:
        f.write("Filename,Expert_1,Expert_2,Expert_3,Expert_4,Expert_5,Majority\n")
        for label in ("Atypical", "Normal"):
            for png in sorted((root / "AtNorM-MD" / label).glob("*.png")):
                f.write(f"{png.name},{label},{label},Normal,{label},Atypical,{label}\n")
    return root


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    return make_tiny_source(tmp_path / "source")


@pytest.fixture(scope="session")
def source_dir() -> Path:
    """The AMi-Br_Benchmark source (../shared by default); a test needing it fails without."""
    source = Settings.from_env().source_dir
    if not (source / "amibr_train_split.csv").is_file():
        pytest.fail(
            f"The AMi-Br source is required for this test and is not at {source}; "
            "set MITOSIS_SOURCE_DIR."
        )
    return source


@pytest.fixture(scope="session")
def real_release(tmp_path_factory, source_dir) -> Settings:
    """The full benchmark release built from ../shared, once per test session."""
    root = tmp_path_factory.mktemp("release")
    settings = Settings.from_env(
        {"MITOSIS_SOURCE_DIR": str(source_dir), "MITOSIS_DATA_DIR": str(root)}
    )
    build_release(settings.source_dir, settings.public_dir, settings.labels_dir)
    return settings


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on loopback for the whole test session."""
    from tests.servers import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis server on loopback for the whole test session."""
    from tests.servers import RedisServer

    server = RedisServer()
    yield server
    server.stop()


def pytest_configure(config):
    if reaper.MARK not in os.environ:  # a nested run (tests/test_reaper.py) keeps its own mark
        config.test_run = reaper.start()


def pytest_unconfigure(config):
    if getattr(config, "test_run", None):
        reaper.kill_marked(config.test_run)


@pytest.fixture
def host_clock_off_by(monkeypatch):
    """Sets the host clock some seconds ahead of this host's (behind if < 0) for the clock
    check, and for the jobs and quotas should they ever read the host clock again (they keep
    the database server's)."""

    def off_by(seconds: float) -> None:
        def skewed():
            return utcnow() + timedelta(seconds=seconds)

        for reader in ("store.clock", "submissions.jobs", "submissions.quota"):
            monkeypatch.setattr(f"{reader}.utcnow", skewed, raising=False)

    return off_by
