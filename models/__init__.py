"""What a model is: registry, strategies, the checkpoint format, inference, explanations.

How a model is made lives one layer up, in ``training``. The public surface is imported lazily
so that light users (the checkpoint's config reader, the metadata of an entry) do not pay for
importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelCfg": "models._registry",
    "register_model": "models._registry",
    "list_models": "models._registry",
    "is_model": "models._registry",
    "get_model_cfg": "models._registry",
    "create_model": "models.factory",
    "save_checkpoint": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
    "Predictor": "models.predictor",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
