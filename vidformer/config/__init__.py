"""Configuration: fvcore CfgNode defaults (defaults.py), YAML files with `_BASE_` inheritance, and
`KEY VALUE` overrides from the command line. Every problem is a ConfigError naming the key or file."""

import ast
import os
from typing import Sequence

import yaml
from fvcore.common.config import CfgNode

from vidformer.config.defaults import get_defaults
from vidformer.errors import ConfigError

__all__ = ["get_cfg", "CfgNode", "ConfigError", "model_overrides"]


def get_cfg(config_file: str | None = None, overrides: Sequence[str] = ()) -> CfgNode:
    """Defaults, then `config_file` (following `_BASE_` chains), then `KEY VALUE` overrides; frozen."""
    cfg = get_defaults()
    if config_file:
        _merge_file(cfg, config_file)
    if overrides:
        _merge_overrides(cfg, list(overrides))
    _validate(cfg)
    cfg.freeze()
    return cfg


def model_overrides(cfg: CfgNode) -> dict:
    """MODEL.OVERRIDES parsed into builder keyword arguments."""
    try:
        value = ast.literal_eval(cfg.MODEL.OVERRIDES) if cfg.MODEL.OVERRIDES else {}
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"MODEL.OVERRIDES {cfg.MODEL.OVERRIDES!r} is not a Python dict literal: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"MODEL.OVERRIDES must be a dict literal, got {cfg.MODEL.OVERRIDES!r}")
    return value


def _merge_file(cfg: CfgNode, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        loaded = CfgNode.load_yaml_with_base(path, allow_unsafe=False)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
    except (FileNotFoundError, AssertionError, OSError) as e:
        # a _BASE_ that points nowhere lands here
        raise ConfigError(f"config file '{path}': {e}") from None
    except TypeError:
        # fvcore reads an empty file (or a base file) as None
        raise ConfigError(f"config file '{path}' (or a file it inherits with _BASE_) is empty or not a "
                          f"mapping of SECTION: {{KEY: VALUE}}") from None
    if isinstance(loaded.get("MODEL"), dict) and "OVERRIDES" in loaded["MODEL"]:
        loaded["MODEL"]["OVERRIDES"] = _quoted_overrides(loaded["MODEL"]["OVERRIDES"], path)
    try:
        cfg.merge_from_other_cfg(CfgNode(loaded))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"config file '{path}': {_explain(e)}") from None


def _merge_overrides(cfg: CfgNode, overrides: list[str]) -> None:
    if len(overrides) % 2:
        raise ConfigError(
            f"overrides come in KEY VALUE pairs; got an odd number ({len(overrides)}): {' '.join(overrides)}"
        )
    overrides = [_quoted_overrides(v, "the command line") if i % 2 and overrides[i - 1] == "MODEL.OVERRIDES" else v
                 for i, v in enumerate(overrides)]
    try:
        cfg.merge_from_list(overrides)
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"command-line override: {_explain(e)}") from None


def _quoted_overrides(value, where: str) -> str:
    """MODEL.OVERRIDES as yacs must receive it to store a string.

    Accepts a YAML mapping ({embed_dim: 16}) or a dict-literal string ("{'embed_dim': 16}"); yacs
    would literal_eval the string into a dict and then refuse it for a str key, so the string is
    quoted once more.
    """
    while isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError) as e:
            raise ConfigError(f"MODEL.OVERRIDES in {where}: {value!r} is not a dict literal: {e}") from None
        if not isinstance(parsed, (str, dict)):
            raise ConfigError(f"MODEL.OVERRIDES in {where} must be a dict literal, got {value!r}")
        value = parsed
    if not isinstance(value, dict):
        raise ConfigError(f"MODEL.OVERRIDES in {where} must be a mapping, got {value!r}")
    return repr(repr(value))


def _explain(e: Exception) -> str:
    text = e.args[0] if e.args else str(e)
    if "Non-existent" in text:  # fvcore says "config key: X" (files), yacs "key: X" (overrides)
        key = text.split(":", 1)[1].strip()
        return f"unknown key '{key}' (see vidformer/config/defaults.py for the keys that exist)"
    return str(text)


_CHOICES = {
    "TRAIN.MIXED_PRECISION": ("none", "bf16", "fp16"),
    "TRAIN.CHECKPOINT_INFLATE": ("center", "average"),
    "TEST.ENSEMBLE_METHOD": ("sum", "logits", "max"),
    "DATA.DECODING_BACKEND": ("pyav", "decord", "torchcodec"),
    "DATA.DATASET": ("kinetics", "ssv2", "folder", "imagefolder", "synthetic", "framelist", "rawframes", "ucf101", "hmdb51"),
    "DATA.SPLIT_ID": (1, 2, 3),
    "SOLVER.OPTIMIZING_METHOD": ("adamw", "sgd"),
    "AUG.RE_MODE": ("pixel", "const"),
}


def _validate(cfg: CfgNode) -> None:
    for key, choices in _CHOICES.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if node not in choices:
            raise ConfigError(f"{key} is {node!r}; expected one of {', '.join(map(str, choices))}")
    model_overrides(cfg)
