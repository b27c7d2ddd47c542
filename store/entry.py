"""What a participant says about an entry, validated before anything is stored.

Messages name a field by its label on the Submit form (:data:`FIELD_LABELS`).

:class:`EntryMetadata` is the one definition of an entry's fields: the submission table keeps
them as one JSON value, the board and its exports read them from it, and the Submit form is
built from :data:`FIELD_LABELS`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from fileio import FORMULA_START, quoted
from store.errors import InvalidMetadata

METHOD_TYPES = ("end-to-end", "linear probe", "LoRA", "other")
_URL = re.compile(r"^https?://[^\s<>\"']+$")
_MARKUP = re.compile(r"<\s*[a-zA-Z!/?]|javascript:|data:text/html", re.IGNORECASE)
# control characters and text-direction ones: plain text has neither
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
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


FIELD_LABELS = {
    "model_name": "Model name",
    "team": "Team",
    "method_type": "Method",
    "backbone": "Backbone",
    "pretraining": "Pretraining data",
    "training_data": "Training data",
    "uses_midog": "Training data includes MIDOG++",
    "paper_url": "Paper link",
    "code_url": "Code link",
    "description": "Description",
}


def metadata_fields() -> tuple[str, ...]:
    """The field names of :class:`EntryMetadata`, in the form's order."""
    return tuple(f.name for f in fields(EntryMetadata))


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

    @classmethod
    def from_dict(cls, values: dict) -> EntryMetadata:
        """From stored or submitted values: unknown keys ignored, missing and empty ones default."""
        data = {}
        for f in fields(cls):
            value = values.get(f.name)
            if value is None:
                continue
            data[f.name] = bool(value) if f.type in ("bool", bool) else str(value)
        return cls(**{"model_name": "", **data})

    def to_dict(self) -> dict:
        """Plain JSON-ready form (what the submission table stores)."""
        return asdict(self)

    def validated(self) -> EntryMetadata:
        """A stripped copy, or ``InvalidMetadata`` naming the field."""
        values = {k: v.strip() if isinstance(v, str) else v for k, v in asdict(self).items()}
        if not values["model_name"]:
            raise InvalidMetadata("Give the entry a model name (up to 200 characters).")
        for field, limit in _LIMITS.items():
            if len(values[field]) > limit:
                raise InvalidMetadata(
                    f"'{FIELD_LABELS[field]}' is {len(values[field])} characters long; the "
                    f"limit is {limit}."
                )
        for field in _LIMITS:
            _check_text(field, values[field])
        if values["method_type"] not in METHOD_TYPES:
            raise InvalidMetadata(
                f"Method type must be one of {', '.join(METHOD_TYPES)}; "
                f"found {quoted(values['method_type'])}."
            )
        for field in ("paper_url", "code_url"):
            if values[field] and not _URL.match(values[field]):
                raise InvalidMetadata(
                    f"'{FIELD_LABELS[field]}' must be an http(s) link; found "
                    f"{quoted(values[field])}."
                )
        if "midog" in values["training_data"].lower():
            values["uses_midog"] = True
        return EntryMetadata(**values)


def _check_text(key: str, value: str) -> None:
    """Names and descriptions are plain text: no markup, no formulas, no control characters.

    The board shows text as text and its CSV export defuses formulas anyway; refusing these at
    the door also protects whoever copies the board elsewhere.
    """
    field = FIELD_LABELS[key]
    if CONTROL_CHARACTERS.search(value):
        raise InvalidMetadata(
            f"'{field}' contains a control or text-direction character; use plain text."
        )
    if found := _MARKUP.search(value):
        raise InvalidMetadata(
            f"'{field}' contains markup or a script link "
            f"({quoted(value[found.start() : found.start() + 24])}); names and descriptions are "
            "plain text."
        )
    if key not in ("paper_url", "code_url") and value.startswith(FORMULA_START):
        raise InvalidMetadata(
            f"'{field}' starts with {quoted(value[0])}, which a spreadsheet runs as a formula; "
            "start it with a letter or a digit."
        )
