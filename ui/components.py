"""Upload components that hand the file to the handler untouched, and prompt clean-up of uploads.

Gradio's own ``Image`` opens every upload with Pillow before the handler runs, and ``File``
judges the file type itself: a text file named ``.png`` then fails with Gradio's generic
message, or an upload is refused while its copy stays in Gradio's cache for hours. These
subclasses pass the uploaded path through, so the packages judge every byte and answer with
their own, specific messages; :func:`discard_upload` removes a refused upload at once. Both
accept only files uploaded to Gradio's upload folder, which :class:`SpaceBlocks` checks.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.data_classes import ListFiles
from gradio.utils import get_upload_folder

NOT_AN_UPLOAD = (
    "Send the file itself (an upload, e.g. gradio_client's handle_file(path)): a path or URL "
    "on the server is not an upload."
)


def require_upload(path_or_url: str) -> None:
    """Only a file in Gradio's upload folder is an upload.

    An API call may name a server path or a URL as its "file": refused here with a sentence
    before Gradio would fetch, copy or refuse it.
    """
    path = Path(str(path_or_url)).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()):
        raise gr.Error(NOT_AN_UPLOAD, print_exception=False)


class SpaceBlocks(gr.Blocks):
    """``gr.Blocks`` whose events answer malformed API calls with a sentence, before any work.

    Gradio refuses a server path sent as an upload (``InvalidPathError``) and a call with too
    few inputs, but the caller reads ``{"error": null}`` and the log gets a traceback that
    repeats every input (a megabyte of text sent is a megabyte logged).
    """

    def validate_inputs(self, block_fn, inputs):
        """Refuse, with our sentence, too few inputs or an upload that is not one."""
        expected = len(block_fn.inputs)
        if len(inputs) < expected:
            raise gr.Error(
                f"This endpoint takes {expected} inputs; the call sent {len(inputs)}. Its "
                "inputs are listed under 'Use via API' (/gradio_api/info).",
                print_exception=False,
            )
        for block, value in zip(block_fn.inputs, inputs, strict=False):
            if isinstance(block, CropImage | UploadFile) and value is not None:
                path = value.get("path") if isinstance(value, dict) else value
                require_upload(path if isinstance(path, str) else "")
        return super().validate_inputs(block_fn, inputs)


class CropImage(gr.Image):
    """``gr.Image`` whose handler receives the uploaded file's path, unread."""

    is_template = True  # rendered by the frontend as the parent component

    def preprocess(self, payload):
        """The upload's path in Gradio's cache (``None`` when nothing was uploaded)."""
        return None if payload is None else payload.path


class UploadFile(gr.File):
    """``gr.File`` (one file) whose handler receives the uploaded path, unread and unjudged."""

    is_template = True

    def preprocess(self, payload):
        """The upload's path in Gradio's cache (``None`` when nothing was uploaded)."""
        if payload is None:
            return None
        return payload[0].path if isinstance(payload, ListFiles) else payload.path


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
