"""What a submitter reads when their job fails: the error's message without server paths."""

from __future__ import annotations

import re
from pathlib import Path

_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)*([^\s/'\"]*?)(?=[.,;:]?(?:\s|$|['\"]))")


def public_reason(error: Exception, roots: tuple[Path, ...] = ()) -> str:
    """A typed error's message as the submitter reads it: no server path, only file names.

    Messages name files so that people can act on them; a worker's own folders (uploads, the
    cache, the label store) are nobody's business outside the server. The server's own
    folders (``roots``) go first, whatever their names hold (spaces included); any other
    absolute path is cut to its last part.
    """
    message = str(error)
    for root in sorted({str(r) for r in roots}, key=len, reverse=True):
        message = message.replace(root.rstrip("/") + "/", "/")  # then cut like any other
    return _SERVER_PATH.sub(r"\1", message)
