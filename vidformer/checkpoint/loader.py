"""load_pretrained: any known checkpoint layout into any vidformer model, with a report of every change.

Sources: a path, an iopath URI, a state dict, an http(s) URL or a model-zoo name (`mvitv2_s.k400_16x4`,
also `zoo:NAME`); URLs and zoo names are fetched once into the cache (checkpoint/remote.py), and a zoo
checkpoint also sets the model's pretrained_cfg (normalisation, sampling rate) from its entry.

Steps: read the file safely, unwrap containers, detect the layout (native, or one of the model
class's `checkpoint_layouts`), convert key names, then adapt shapes to the model one key at a time
(inflate / deflate kernels, resize position tables, zero new temporal tables, drop a classifier with
another class count) and load. Anything that cannot be adapted is reported, and with strict=True
raised, all problems at once, before the model is touched.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from vidformer.checkpoint.inflate import (INFLATE_METHODS, deflate_kernel, inflate_kernel, resize_pos_embed,
                                          resize_rel_pos)
from vidformer.checkpoint.io import load_checkpoint_file, unwrap_state_dict
from vidformer.checkpoint.remote import entry_of
from vidformer.checkpoint.zoo import PretrainedEntry
from vidformer.errors import UsageError

_TEMPORAL_TABLES = ("rel_pos_t", "pos_embed_temporal", "temporal_pos")
# LoadReport.check_fit: below this share of the model's tensors loaded (or of the checkpoint's used) the
# file is another model or another size of the family (mvitv2_s into mvitv2_b loads about half)
MIN_FIT_SHARE = 0.9


@dataclass
class LoadReport:
    """What load_pretrained did with every key."""

    source: str
    layout: str
    found_in: str = ""
    loaded: list[str] = field(default_factory=list)
    inflated: dict[str, str] = field(default_factory=dict)
    interpolated: dict[str, str] = field(default_factory=dict)
    zeroed: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    mismatched: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    checkpoint_num_classes: int | None = None

    @property
    def converted(self) -> bool:
        """True when key names were translated from a foreign layout."""
        return self.layout != "native"

    @property
    def problems(self) -> list[str]:
        lines = [f"missing (kept at init): {k}" for k in self.missing]
        lines += [f"unexpected (ignored): {k}" for k in self.unexpected]
        lines += [f"shape mismatch (not loaded): {k}: {v}" for k, v in self.mismatched.items()]
        lines += [f"dropped: {k}: {v}" for k, v in self.dropped.items()]
        return lines

    def fit(self) -> tuple[float, float]:
        """(share of the model's tensors taken from the checkpoint, share of the checkpoint's tensors used).

        Zero-initialised temporal tables and a classifier dropped for another class count count on
        neither side: inflating an image model and fine-tuning to new classes expect them.
        """
        taken = len(self.loaded) + len(self.inflated) + len(self.interpolated)
        model_side = taken + len(self.missing) + len(self.mismatched)
        checkpoint_side = taken + len(self.mismatched) + len(self.unexpected)
        return taken / max(model_side, 1), taken / max(checkpoint_side, 1)

    @property
    def summary(self) -> str:
        """One line: how much of the model the checkpoint filled, and what it left."""
        taken = len(self.loaded) + len(self.inflated) + len(self.interpolated)
        model_share, _ = self.fit()
        total = taken + len(self.missing) + len(self.mismatched)
        parts = [f"{taken} of {total} model tensors loaded ({model_share:.0%})"]
        parts += [f"{len(self.missing)} missing"] if self.missing else []
        parts += [f"{len(self.mismatched)} of another shape"] if self.mismatched else []
        parts += [f"{len(self.unexpected)} checkpoint tensors unused"] if self.unexpected else []
        return ", ".join(parts)

    def check_fit(self, allow_partial: bool = False, min_share: float = MIN_FIT_SHARE) -> None:
        """Raise UsageError (with the summary) unless the weights fit: at least `min_share` of the model's
        tensors loaded and of the checkpoint's used. allow_partial=True accepts any fit."""
        model_share, checkpoint_share = self.fit()
        if allow_partial or min(model_share, checkpoint_share) >= min_share:
            return
        raise UsageError(
            f"'{self.source}' ({self.layout} layout) does not fit the model: {self.summary}; a fit fills "
            f"{min_share:.0%} of the model and uses {min_share:.0%} of the file (another model, or another size of "
            f"the family?); --allow-partial (allow_partial=True) loads it anyway")

    def __str__(self) -> str:
        rows = [("source", self.source), ("layout", self.layout + (" (keys converted)" if self.converted else "")),
                ("found in", self.found_in), ("loaded as is", str(len(self.loaded)))]
        rows += [("model option", f"{k} = {v!r}") for k, v in self.options.items()]
        rows += [(f"inflated ({m})", k) for k, m in self.inflated.items()]
        rows += [("interpolated", f"{k}: {v}") for k, v in self.interpolated.items()]
        rows += [("zero-initialised", k) for k in self.zeroed]
        rows += [("dropped", f"{k}: {v}") for k, v in self.dropped.items()]
        rows += [("shape mismatch", f"{k}: {v}") for k, v in self.mismatched.items()]
        rows += [("missing", k) for k in self.missing]
        rows += [("unexpected", k) for k in self.unexpected]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def load_pretrained(model: nn.Module, source, *, inflate: str = "center", strict: bool = False) -> LoadReport:
    """Load weights from a path, iopath URI, URL, zoo name or state dict into `model`; see the module docstring."""
    if inflate not in INFLATE_METHODS:
        raise UsageError(f"inflate must be one of {', '.join(INFLATE_METHODS)}, got {inflate!r}")
    if isinstance(source, dict):
        name, obj = "<state dict>", source
    else:
        name, obj = str(source), load_checkpoint_file(str(source))
    state, found_in = unwrap_state_dict(obj)
    options = _recorded_options(obj)
    if options:  # a native file converted from a layout that implies model options
        model.apply_options(options)
    target = model.state_dict()
    layout, state = _convert(model, state, target, name)
    report = LoadReport(source=name, layout=layout, found_in=found_in)
    report.options = dict(model.pretrained_cfg.extra.get("options", {})) if hasattr(model, "pretrained_cfg") else {}
    adapted = _adapt(model, state, target, inflate, report)
    if strict and report.problems:
        raise UsageError(f"strict load of '{name}' ({layout} layout) failed:\n  " + "\n  ".join(report.problems))
    model.load_state_dict(adapted, strict=False)
    entry = entry_of(source)
    if entry is not None and hasattr(model, "pretrained_cfg"):
        _feed_like(model.pretrained_cfg, entry)
    return report


def _feed_like(cfg, entry: PretrainedEntry) -> None:
    """The model now expects its input the way the zoo checkpoint was trained (its clip geometry only
    where the model has the same clip length)."""
    cfg.mean, cfg.std, cfg.source = tuple(entry.mean), tuple(entry.std), f"zoo:{entry.name}"
    if cfg.num_frames == entry.num_frames:
        cfg.sampling_rate = entry.sampling_rate


def _recorded_options(obj) -> dict:
    cfg = obj.get("pretrained_cfg") if isinstance(obj, dict) else None
    extra = cfg.get("extra") if isinstance(cfg, dict) else None
    return dict(extra.get("options", {})) if isinstance(extra, dict) else {}


def _convert(model: nn.Module, state: dict, target: dict, name: str) -> tuple[str, dict]:
    if all(k in target for k in state):
        return "native", state
    for layout in getattr(model, "checkpoint_layouts", ()):
        if layout.detect(state):
            return layout.name, layout.convert(state, model)
    overlap = sum(k in target for k in state) / max(len(state), 1)
    if overlap >= 0.9:  # native with a few extra keys: those are reported as unexpected
        return "native", state
    known = ["native"] + [layout.name for layout in getattr(model, "checkpoint_layouts", ())]
    raise UsageError(
        f"'{name}' is in no checkpoint layout {type(model).__name__} knows ({', '.join(known)}); "
        f"only {overlap:.0%} of its keys are model keys. First keys: {', '.join(list(state)[:6])}"
    )


def _adapt(model: nn.Module, state: dict, target: dict, method: str, report: LoadReport) -> dict:
    head_keys = model.classifier_keys() if hasattr(model, "classifier_keys") else set()
    pos_layout = getattr(model, "pos_embed_layout", None)
    out = {}
    for key, want in target.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            if any(t in key for t in _TEMPORAL_TABLES):
                out[key] = torch.zeros_like(want)
                report.zeroed.append(key)
            else:
                report.missing.append(key)
            continue
        have = state[key].to(want.dtype)
        if have.shape == want.shape:
            out[key] = have
            report.loaded.append(key)
        elif have.ndim == 4 and want.ndim == 5 and have.shape == want.shape[:2] + want.shape[3:]:
            out[key] = inflate_kernel(have, want.shape[2], method)
            report.inflated[key] = f"{method}, kt={want.shape[2]}"
        elif have.ndim == 5 and want.ndim == 4 and have.shape[:2] + have.shape[3:] == want.shape:
            out[key] = deflate_kernel(have)
            report.inflated[key] = f"3-D -> 2-D (sum over kt={have.shape[2]})"
        elif "rel_pos" in key and have.ndim == 2 and have.shape[1] == want.shape[1]:
            out[key] = resize_rel_pos(have, want.shape[0])
            report.interpolated[key] = f"{have.shape[0]} -> {want.shape[0]} rows"
        elif pos_layout is not None and pos_layout(key) is not None and have.ndim == 3:
            num_prefix, grid = pos_layout(key)
            out[key] = resize_pos_embed(have, num_prefix, grid)
            report.interpolated[key] = f"{have.shape[1] - num_prefix} tokens -> grid {grid}"
        elif key in head_keys:
            report.checkpoint_num_classes = have.shape[0]
            report.dropped[key] = (f"classifier for {have.shape[0]} classes; the model has {want.shape[0]} "
                                   f"(kept at init)")
        else:
            report.mismatched[key] = f"checkpoint {tuple(have.shape)} vs model {tuple(want.shape)}"
    report.unexpected = [k for k in state if k not in target]
    return out
