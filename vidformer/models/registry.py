"""The model registry: `@register_model` builders, `list_models`, `create_model`."""

import difflib
import fnmatch
import inspect
from typing import Callable

from torch import nn

from vidformer.errors import UsageError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name. It takes num_classes, num_frames, img_size, **overrides."""
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, *, num_classes: int = 400, num_frames: int | None = None, img_size: int | None = None,
                 pretrained=None, **overrides) -> nn.Module:
    """Build a registered model.

    num_frames=1 gives the family's image model; None takes the family's default clip length.
    `pretrained` (a path, iopath URI or state dict) is loaded with vidformer.load_pretrained and its
    report printed. Other keyword arguments go to the family's model class.
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown model '{name}'{hint} Known models: {', '.join(list_models())}")
    if num_frames is not None and num_frames < 1:
        raise UsageError(f"num_frames must be >= 1, got {num_frames}")
    kwargs = dict(overrides, num_classes=num_classes)
    if num_frames is not None:
        kwargs["num_frames"] = num_frames
    if img_size is not None:
        kwargs["img_size"] = img_size
    builder = _BUILDERS[name]
    try:
        inspect.signature(builder).bind(**kwargs)
        model = builder(**kwargs)
    except TypeError as e:
        raise UsageError(f"model '{name}': {e}") from None
    if pretrained is not None:
        # checkpoint sits above models in the import order; create_model is the one convenience
        # that reaches up, and only when asked to load weights.
        from vidformer.checkpoint import load_pretrained

        print(load_pretrained(model, pretrained))
    return model
