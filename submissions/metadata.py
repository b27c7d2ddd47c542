"""What a participant says about an entry, validated before anything is stored."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from submissions.errors import InvalidMetadata

METHOD_TYPES = ("end-to-end", "linear probe", "LoRA", "other")
_URL = re.compile(r"^https?://[^\s<>\"']+$")
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
