"""The tensors of a checkpoint: safetensors headers checked before loading, shapes compared.

A header is judged before any tensor is read: every tensor's byte range must lie inside the
file and hold exactly its shape times its dtype's size, so no declared shape can be larger
than the file, and the declared names and shapes are compared with the architecture's, built
on the meta device.
"""

from __future__ import annotations

import json
import math

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from models.archive import WEIGHTS, CheckpointFiles
from models.errors import CheckpointError

MAX_HEADER_BYTES = 16 * 2**20
MAX_RANK, MAX_DIM = 8, 2**31 - 1
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def read_tensors(files: CheckpointFiles, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(files.read(name))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{name} is not a valid safetensors file ({e}).") from e


def contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def header_tensors(files: CheckpointFiles, name: str) -> dict[str, torch.Tensor]:
    """The tensors a safetensors file declares, as meta tensors, after checking its header.

    Every tensor's byte range must lie inside the file and hold exactly its shape times its
    dtype's size, so no declared shape can be larger than the file itself.
    """
    size = files.size(name) if name in files else 0
    prefix = files.read(name, prefix=8)
    length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if length < 2 or length > size - 8 or length > MAX_HEADER_BYTES:
        raise CheckpointError(f"{name} has no valid safetensors header.")
    body = size - 8 - length
    try:
        header = json.loads(files.read(name, prefix=8 + length)[8:])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        return {
            key: _meta_tensor(key, entry, body)
            for key, entry in header.items()
            if key != "__metadata__"
        }
    except RecursionError as e:
        raise CheckpointError(
            f"{name} has an invalid safetensors header (nested too deeply)."
        ) from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{name} has an invalid safetensors header ({e}).") from e


def _meta_tensor(key: str, entry: dict, body: int) -> torch.Tensor:
    start, end = entry["data_offsets"]
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= body):
        raise ValueError(f"'{key}' points outside the file")
    shape = entry["shape"]
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_RANK
        and all(isinstance(d, int) and 0 <= d <= MAX_DIM for d in shape)
    ):
        raise ValueError(f"'{key}' has the shape {str(shape)[:80]}")
    itemsize = DTYPE_BYTES.get(entry["dtype"])
    if itemsize is None:
        raise ValueError(f"'{key}' has the unknown dtype {str(entry['dtype'])[:20]!r}")
    if math.prod(shape) * itemsize != end - start:
        raise ValueError(
            f"'{key}' declares the shape {shape} of {entry['dtype']} but holds {end - start} bytes"
        )
    return torch.empty(shape, device="meta")


def check_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``CheckpointError`` naming the first missing, unexpected or mis-shaped tensor."""
    check_state_dict(model.state_dict(), state, WEIGHTS, what)


def check_state_dict(expected_state: dict, state: dict, file: str, what: str) -> None:
    """``state`` (the tensors of ``file``) must have exactly the names and shapes of ``what``."""
    expected = {k: tuple(v.shape) for k, v in expected_state.items()}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(
            f"{file} lacks {len(missing)} tensor(s) of {what}, e.g. '{missing[0]}'."
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{file} has {len(unexpected)} tensor(s) that {what} does not, e.g. '{unexpected[0]}'."
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"'{key}' is {tuple(state[key].shape)} in the checkpoint but "
                f"{what} expects {shape}."
            )
