"""Upload components that hand the file to the handler untouched, and prompt clean-up of uploads.

Gradio's own ``Image`` opens every upload with Pillow before the handler runs, and ``File``
judges the file type itself: a text file named ``.png`` then fails with Gradio's generic
message, or an upload is refused while its copy stays in Gradio's cache for hours. These
subclasses pass the uploaded path through, so the packages judge every byte and answer with
their own, specific messages; :func:`discard_upload` removes a refused upload at once.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.data_classes import ListFiles
from gradio.utils import get_upload_folder

from gradio.events import Dependency

class CropImage(gr.Image):
    """``gr.Image`` whose handler receives the uploaded file's path, unread."""

    is_template = True  # rendered by the frontend as the parent component

    def preprocess(self, payload):
        """The upload's path in Gradio's cache (``None`` when nothing was uploaded)."""
        return None if payload is None else payload.path
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class UploadFile(gr.File):
    """``gr.File`` (one file) whose handler receives the uploaded path, unread and unjudged."""

    is_template = True

    def preprocess(self, payload):
        """The upload's path in Gradio's cache (``None`` when nothing was uploaded)."""
        if payload is None:
            return None
        return payload[0].path if isinstance(payload, ListFiles) else payload.path
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def discard_upload(path: str | Path | None) -> None:
    """Delete an upload from Gradio's cache now; anything outside the cache is left alone."""
    if not path:
        return
    file = Path(path).resolve()
    cache = Path(get_upload_folder()).resolve()
    if not file.is_relative_to(cache) or file == cache:
        return
    file.unlink(missing_ok=True)
    if file.parent != cache:
        try:
            file.parent.rmdir()  # Gradio keeps each upload in a folder of its own
        except OSError:
            pass