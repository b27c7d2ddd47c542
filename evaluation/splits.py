"""The one place that knows the benchmark's splits: names, roles and expected sizes."""

from __future__ import annotations

from dataclasses import dataclass

ATYPICAL = "atypical"
NORMAL = "normal"
LABELS = (ATYPICAL, NORMAL)


@dataclass(frozen=True)
class Split:
    """One split of the benchmark.

    Attributes:
        name: identifier used in files, APIs and the leaderboard.
        title: how people write it.
        source_folder: folder of the public AMi-Br release that holds its crops.
        n_atypical, n_normal: the counts SOURCE.md documents; a release that differs is refused.
        hidden: whether its labels live only in the private store.
    """

    name: str
    title: str
    source_folder: str
    n_atypical: int
    n_normal: int
    hidden: bool

    @property
    def n(self) -> int:
        """Number of crops."""
        return self.n_atypical + self.n_normal


AMIBR_TRAIN = Split("amibr_train", "AMi-Br train", "AMi-Br", 648, 2246, hidden=False)
AMIBR_TEST = Split("amibr_test", "AMi-Br test", "AMi-Br", 184, 642, hidden=False)
ATNORM_BR = Split("atnorm_br", "AtNorM-Br", "AtNorM-Br", 128, 618, hidden=True)
ATNORM_MD = Split("atnorm_md", "AtNorM-MD", "AtNorM-MD", 219, 1888, hidden=True)

TRAIN_SPLIT = AMIBR_TRAIN
TEST_SPLITS = (AMIBR_TEST, ATNORM_BR, ATNORM_MD)
HIDDEN_SPLITS = tuple(s for s in TEST_SPLITS if s.hidden)
SPLITS = {s.name: s for s in (TRAIN_SPLIT, *TEST_SPLITS)}
SPLIT_TITLES = {s.name: s.title for s in TEST_SPLITS}  # the board's order


def get_split(name: str) -> Split:
    """The split called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return SPLITS[name]
    except KeyError:
        raise ValueError(f"Unknown split {name!r}; expected one of {', '.join(SPLITS)}.") from None
