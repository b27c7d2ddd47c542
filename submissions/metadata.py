"""What a participant says about an entry, validated before anything is stored."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from submissions.errors import InvalidMetadata

METHOD_TYPES = ("end-to-end", "linear probe", "LoRA", "other")
_URL = re.compile(r"^https?://[^\s<>\"']+$")
_MARKUP = re.compile(r"<\s*[a-zA-Z!/?]|javascript:|data:text/html", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
FORMULA_START = ("=", "+", "-", "@")
_LIMITS = {
    "model_name": 200,
    "team": 200,
    "backbone": 200,
    "pretraining": 200,
    "training_data": 300,
    "paper_url": 500,
    "code_url": 500,
    "description": 2000,
}


@dataclass(frozen=True)
class EntryMetadata:
    """The metadata form of a submission.

    ``uses_midog`` flags training data that includes MIDOG++, the source of AtNorM-MD.
    """

    model_name: str
    team: str = ""
    method_type: str = "other"
    backbone: str = ""
    pretraining: str = ""
    training_data: str = ""
    uses_midog: bool = False
    paper_url: str = ""
    code_url: str = ""
    description: str = ""

    def validated(self) -> EntryMetadata:
        """A stripped copy, or ``InvalidMetadata`` naming the field."""
        values = {k: v.strip() if isinstance(v, str) else v for k, v in asdict(self).items()}
        if not values["model_name"]:
            raise InvalidMetadata("Give the entry a model name (up to 200 characters).")
        for field, limit in _LIMITS.items():
            if len(values[field]) > limit:
                raise InvalidMetadata(
                    f"'{field}' is {len(values[field])} characters long; the limit is {limit}."
                )
        for field in _LIMITS:
            _check_text(field, values[field])
        if values["method_type"] not in METHOD_TYPES:
            raise InvalidMetadata(
                f"Method type must be one of {', '.join(METHOD_TYPES)}; "
                f"found {values['method_type']!r}."
            )
        for field in ("paper_url", "code_url"):
            if values[field] and not _URL.match(values[field]):
                raise InvalidMetadata(
                    f"'{field}' must be an http(s) link; found {values[field][:80]!r}."
                )
        if "midog" in values["training_data"].lower():
            values["uses_midog"] = True
        return EntryMetadata(**values)


def _check_text(field: str, value: str) -> None:
    """Names and descriptions are plain text: no markup, no formulas, no control characters.

    The board shows text as text and its CSV export defuses formulas anyway; refusing these at
    the door also protects whoever copies the board elsewhere.
    """
    if _CONTROL.search(value):
        raise InvalidMetadata(
            f"'{field}' contains a control or text-direction character; use plain text."
        )
    if found := _MARKUP.search(value):
        raise InvalidMetadata(
            f"'{field}' contains markup or a script link "
            f"({value[found.start() : found.start() + 24]!r}); names and descriptions are plain "
            "text."
        )
    if field not in ("paper_url", "code_url") and value.startswith(FORMULA_START):
        raise InvalidMetadata(
            f"'{field}' starts with {value[0]!r}, which a spreadsheet runs as a formula; start "
            "it with a letter or a digit."
        )
