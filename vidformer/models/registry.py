"""The model registry: `@register_model` builders, `list_models`, `create_model`."""

import difflib
import fnmatch
import inspect
import os
from typing import Callable

from torch import nn

from vidformer.errors import UsageError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register a builder under its function name (or `name`, e.g. "pytorchvideo/x3d_m").

    A builder takes num_classes, num_frames, img_size, **overrides. Use as `@register_model` or
    `register_model(builder, name=...)`.
    """
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _BUILDERS:
            raise ValueError(f"model '{key}' is registered twice")
        _BUILDERS[key] = builder
        return builder

    return add(fn) if fn is not None else add


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, *, num_classes: int | None = None, num_frames: int | None = None,
                 img_size: int | None = None, pretrained=None, **overrides) -> nn.Module:
    """Build a registered model.

    num_frames=1 gives the family's image model; None takes the family's default clip length.
    num_classes None is 400, or the checkpoint's class count when `pretrained` is a zoo checkpoint.
    `pretrained` is loaded with vidformer.load_pretrained and its report printed: a path, iopath URI,
    URL, state dict or zoo name ("mvitv2_s.k400_16x4"), or for this model a dataset tag or zoo suffix
    ("k400", "in1k_timm"; the entry matching num_frames / img_size, else the first listed), or True (its
    first zoo entry). A zoo checkpoint also gives the num_frames and img_size left unset.
    Other keyword arguments go to the family's model class.
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "."
        raise UsageError(f"unknown model '{name}'{hint} Known models: {', '.join(list_models())}")
    if num_frames is not None and num_frames < 1:
        raise UsageError(f"num_frames must be >= 1, got {num_frames}")
    entry = _zoo_entry(name, pretrained, num_frames, img_size)
    if entry is not None:
        pretrained = f"zoo:{entry.name}"
        num_classes = entry.num_classes if num_classes is None else num_classes
        num_frames = entry.num_frames if num_frames is None else num_frames
        img_size = entry.crop_size if img_size is None else img_size
    kwargs = dict(overrides, num_classes=400 if num_classes is None else num_classes)
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


def _zoo_entry(name: str, pretrained, num_frames: int | None, img_size: int | None):
    """The zoo entry `pretrained` means for model `name`, or None when it is a path, URL or state dict."""
    if pretrained is None or isinstance(pretrained, dict):
        return None
    from vidformer.checkpoint.zoo import ZOO_PREFIX, get_entry, pick_entry, zoo_name

    if pretrained is True:
        return pick_entry(name, "", num_frames, img_size, first=True)
    if not isinstance(pretrained, str) or os.path.exists(pretrained) or "://" in pretrained:
        return None
    if pretrained.startswith(ZOO_PREFIX) or zoo_name(pretrained) is not None:
        entry = get_entry(pretrained)
        if entry.model != name:
            raise UsageError(f"zoo entry '{entry.name}' is a checkpoint of {entry.model}, not of {name}")
        return entry
    if "/" in pretrained or "." in pretrained:  # a path that does not exist: load_pretrained says so
        return None
    return pick_entry(name, pretrained, num_frames, img_size)
