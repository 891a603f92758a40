"""Configuration: fvcore CfgNode defaults (defaults.py), YAML files with `_BASE_` inheritance, and
`KEY VALUE` overrides from the command line. Every problem is a ConfigError naming the key or file;
validate_cfg is the one place that checks values (choices and ranges)."""

import ast
import difflib
import os
from typing import Sequence

import yaml
from fvcore.common.config import CfgNode

from vidformer.config.defaults import get_defaults
from vidformer.errors import ConfigError

__all__ = ["get_cfg", "cfg_from_yaml", "CfgNode", "ConfigError", "check_output_dir", "model_overrides", "validate_cfg",
           "COMPILE_BACKENDS", "COMPILE_MODES", "check_compile_settings"]

# torch.compile backends shipped with torch (the names HF Trainer's torch_compile_backend and timm's
# --torchcompile take too) and inductor's modes (torch._inductor.list_mode_options(), less "lite")
COMPILE_BACKENDS = ("inductor", "cudagraphs", "aot_eager", "eager")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def get_cfg(config_file: str | None = None, overrides: Sequence[str] = ()) -> CfgNode:
    """Defaults, then `config_file` (following `_BASE_` chains), then `KEY VALUE` overrides; frozen."""
    cfg = get_defaults()
    if config_file:
        _merge_file(cfg, config_file)
    if overrides:
        _merge_overrides(cfg, list(overrides))
    validate_cfg(cfg)
    cfg.freeze()
    return cfg


def cfg_from_yaml(text: str, overrides: Sequence[str] = (), where: str = "a saved config") -> CfgNode:
    """Defaults, then the YAML `text` of a resolved config (what a checkpoint carries, no _BASE_), then
    overrides; frozen. `where` names the text's origin in errors."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where} is not a mapping of SECTION: {{KEY: VALUE}}")
    cfg = get_defaults()
    _merge_loaded(cfg, loaded, where)
    if overrides:
        _merge_overrides(cfg, list(overrides))
    validate_cfg(cfg)
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


def check_output_dir(path: str, key: str = "OUTPUT_DIR") -> None:
    """Refuse an output folder that cannot be created or written (a file in the way, no permission),
    naming `key`, before a run spends time on anything else."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == os.path.abspath(path) else f"is under '{existing}', which is a file"
        raise ConfigError(f"{key} '{path}' {where}; expected a folder (or a path where one can be made)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} '{path}': '{existing}' is not writable; expected a folder you can write to")


def check_compile_settings(backend: str, mode: str, keys: tuple[str, str] = ("MODEL.COMPILE_BACKEND", "MODEL.COMPILE_MODE")
                           ) -> None:
    """A torch.compile backend and mode that go together; `keys` name the two settings in the error."""
    if backend not in COMPILE_BACKENDS:
        raise ConfigError(f"{keys[0]} is {backend!r}; expected one of {', '.join(COMPILE_BACKENDS)}")
    if mode not in COMPILE_MODES:
        raise ConfigError(f"{keys[1]} is {mode!r}; expected one of {', '.join(COMPILE_MODES)}")
    if mode != "default" and backend != "inductor":
        raise ConfigError(f"{keys[1]} {mode!r} is a mode of the inductor backend; with {keys[0]} {backend!r} "
                          f"expected 'default'")


def _merge_file(cfg: CfgNode, path: str) -> None:
    if os.path.isdir(path):
        raise ConfigError(f"config file '{path}' is a directory; expected a YAML file (see configs/)")
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
    _merge_loaded(cfg, loaded, f"config file '{path}'")


def _merge_loaded(cfg: CfgNode, loaded: dict, where: str) -> None:
    if isinstance(loaded.get("MODEL"), dict) and "OVERRIDES" in loaded["MODEL"]:
        loaded["MODEL"]["OVERRIDES"] = _quoted_overrides(loaded["MODEL"]["OVERRIDES"], where)
    try:
        cfg.merge_from_other_cfg(CfgNode(loaded))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{where}: {_explain(e)}") from None


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
        close = difflib.get_close_matches(key, _key_names(get_defaults()), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "see vidformer/config/defaults.py for the keys that exist"
        return f"unknown key '{key}'; {hint}"
    return str(text)


def _key_names(node: CfgNode, prefix: str = "") -> list[str]:
    """Full names (SECTION.KEY) of every key under `node`."""
    names = []
    for name, value in node.items():
        names += _key_names(value, f"{prefix}{name}.") if isinstance(value, CfgNode) else [prefix + name]
    return names


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


# key -> (lowest, highest) allowed value, None for no bound; lists are checked element by element
_RANGES = {
    "TRAIN.BATCH_SIZE": (1, None),
    "TRAIN.GRAD_ACCUM_STEPS": (1, None),
    "TRAIN.EVAL_PERIOD": (1, None),
    "TRAIN.CHECKPOINT_PERIOD": (1, None),
    "TRAIN.MAX_NONFINITE_STEPS": (1, None),
    "TRAIN.EMA_DECAY": (0.0, 1.0),
    "TEST.BATCH_SIZE": (1, None),
    "TEST.NUM_ENSEMBLE_VIEWS": (1, None),
    "MODEL.NUM_CLASSES": (1, None),
    "MODEL.DROPOUT_RATE": (0.0, 1.0),
    "MODEL.DROPPATH_RATE": (0.0, 1.0),
    "DATA.NUM_FRAMES": (1, None),
    "DATA.SAMPLING_RATE": (1, None),
    "DATA.TARGET_FPS": (1, None),
    "DATA.TRAIN_JITTER_SCALES": (1, None),
    "DATA.TRAIN_CROP_SIZE": (1, None),
    "DATA.TEST_CROP_SIZE": (1, None),
    "DATA.MAX_FAILED_FRACTION": (0.0, 1.0),
    "AUG.NUM_SAMPLE": (1, None),
    "AUG.RE_PROB": (0.0, 1.0),
    "MIXUP.PROB": (0.0, 1.0),
    "MIXUP.SWITCH_PROB": (0.0, 1.0),
    "MIXUP.LABEL_SMOOTH_VALUE": (0.0, 1.0),
    "SOLVER.BASE_LR": (0.0, None),
    "SOLVER.REFERENCE_BATCH": (1, None),
    "SOLVER.MAX_EPOCH": (0, None),
    "SOLVER.WARMUP_EPOCHS": (0.0, None),
    "SOLVER.WEIGHT_DECAY": (0.0, None),
    "SOLVER.CLIP_GRAD_L2NORM": (0.0, None),
    "LOG_PERIOD": (1, None),
    "DATA_LOADER.NUM_WORKERS": (0, None),
}


def _value(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_cfg(cfg: CfgNode) -> None:
    """Every value the keys in _CHOICES and _RANGES may take, and the pairs of keys that must agree, checked
    once for files and overrides alike."""
    for key, choices in _CHOICES.items():
        value = _value(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key} is {value!r}; expected one of {', '.join(map(str, choices))}")
    for key, (low, high) in _RANGES.items():
        value = _value(cfg, key)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if (low is not None and v < low) or (high is not None and v > high):
                bounds = f">= {low}" if high is None else f"between {low} and {high}"
                raise ConfigError(f"{key} is {value!r}; expected {bounds}")
    model_overrides(cfg)
    check_compile_settings(cfg.MODEL.COMPILE_BACKEND, cfg.MODEL.COMPILE_MODE)
