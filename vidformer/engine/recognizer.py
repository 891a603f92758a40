"""A trained video model ready to answer questions: `vidformer.load_recognizer(checkpoint)`.

The recognizer holds the model, its config and its class names, and turns a video file (or an already
preprocessed tensor) into the checkpoint's test views, runs them in batches under
torch.inference_mode, and returns the top classes or the pre-logits features averaged over the views.
It is the one inference path: `vidformer demo`, `vidformer extract` and `vidformer export` load their
model through it.

Where the config comes from: the config file given; else the one a vidformer training checkpoint
carries ("cfg"); else, for a file written by `vidformer convert`, one built from the metadata it
carries (model name, classes, frames, crop, normalisation). Weights that fill too small a share of the
model's tensors (the wrong model for the file) are refused unless allow_partial=True.
"""

import os
from dataclasses import dataclass

import torch
from fvcore.common.config import CfgNode
from torch import nn

from vidformer.checkpoint import zoo
from vidformer.config import cfg_from_yaml, get_cfg
from vidformer.engine.build import build_model
from vidformer.engine.evaluator import aggregate_views
from vidformer.errors import UsageError
from vidformer.layers import fuse_for_inference

def label_names(cfg: CfgNode) -> list[str]:
    """Class names of cfg's dataset, or "class i" when none are known."""
    from vidformer.data import load_label_names

    names = load_label_names(cfg)
    if not names or len(names) != cfg.MODEL.NUM_CLASSES:
        return [f"class {i}" for i in range(cfg.MODEL.NUM_CLASSES)]
    return list(names)


def _cfg_from_metadata(ckpt: dict, overrides) -> CfgNode:
    """The test config of a `vidformer convert` file: its model, classes, clip length, crop and normalisation."""
    pcfg = ckpt.get("pretrained_cfg") or {}
    crop = int(pcfg.get("crop_size", 224))
    opts = ["MODEL.MODEL_NAME", str(ckpt["model_name"]), "MODEL.NUM_CLASSES", str(int(ckpt["num_classes"])),
            "DATA.NUM_FRAMES", str(int(pcfg.get("num_frames", 16))),
            "DATA.SAMPLING_RATE", str(int(pcfg.get("sampling_rate", 4))),
            "DATA.TRAIN_CROP_SIZE", str(crop), "DATA.TEST_CROP_SIZE", str(crop),
            # the 256/224 short side of the published test protocols, scaled to this crop
            "DATA.TRAIN_JITTER_SCALES", str([round(crop * 8 / 7), round(crop * 10 / 7)])]
    for key in ("mean", "std"):
        if key in pcfg:
            opts += [f"DATA.{key.upper()}", str([float(v) for v in pcfg[key]])]
    return get_cfg(None, opts + list(overrides))


def recognizer_config(source, config_file: str | None = None, overrides=(), *, ckpt=None) -> CfgNode:
    """The config to run `source` with (see the module docstring); `ckpt` is the already read file, if any."""
    if config_file:
        return get_cfg(config_file, overrides)
    entry = zoo.get_entry(zoo.zoo_name(source)) if zoo.zoo_name(source) else None
    if entry is not None:  # a published file carries no vidformer config: its zoo entry says what it is
        return _cfg_from_metadata({"model_name": entry.model, "num_classes": entry.num_classes, "pretrained_cfg": {
            "num_frames": entry.num_frames, "sampling_rate": entry.sampling_rate, "crop_size": entry.crop_size,
            "mean": entry.mean, "std": entry.std}}, overrides)
    if ckpt is None:
        from vidformer.checkpoint import load_checkpoint_file

        ckpt = load_checkpoint_file(str(source))
    if isinstance(ckpt, dict) and isinstance(ckpt.get("cfg"), str):
        try:
            return cfg_from_yaml(ckpt["cfg"], overrides, where=f"the config carried by '{source}'")
        except UsageError as e:  # e.g. a PySlowFast checkpoint carries a PySlowFast config
            raise UsageError(f"checkpoint '{source}' carries a config vidformer cannot read ({e}); "
                             f"pass a config file too (--config FILE)") from None
    if isinstance(ckpt, dict) and "model_name" in ckpt and "num_classes" in ckpt:
        return _cfg_from_metadata(ckpt, overrides)
    raise UsageError(f"checkpoint '{source}' carries no config (it is neither a vidformer training checkpoint nor "
                     f"a `vidformer convert` file); pass a config file too (--config FILE)")


def load_model(cfg: CfgNode, source, *, ckpt=None, allow_partial: bool = False) -> tuple[nn.Module, object]:
    """cfg's model with the weights of `source` (or the already read `ckpt` of it), fused for inference
    (layers.fuse_for_inference: eval mode, exact folds, refuses to train), and the LoadReport; refused when
    the weights do not fit it (LoadReport.check_fit)."""
    from vidformer.checkpoint import load_pretrained

    model = build_model(cfg)
    report = load_pretrained(model, ckpt if ckpt is not None else source, strict=False)
    report.source = str(source)
    report.check_fit(allow_partial)
    return fuse_for_inference(model), report


@dataclass
class Recognizer:
    """A model, its config and class names; see load_recognizer."""

    model: nn.Module
    cfg: CfgNode
    class_names: list[str]
    device: torch.device
    report: object = None

    @property
    def num_frames(self) -> int:
        return self.cfg.DATA.NUM_FRAMES

    def views(self, path: str, *, num_clips: int | None = None, num_crops: int | None = None) -> torch.Tensor:
        """The test views (V, C, T, S, S) of a video file from one decode (TEST.NUM_ENSEMBLE_VIEWS x
        TEST.NUM_SPATIAL_CROPS unless given). A still image is one frame: an image model (T=1) takes it
        (as one temporal view), a video model refuses it."""
        from vidformer.data import DecodeError, load_video_views, open_video

        path = os.fspath(path)
        if os.path.isdir(path):
            raise UsageError(f"video '{path}' is a directory; expected a video file")
        if not os.path.isfile(path):
            raise UsageError(f"video '{path}' does not exist")
        try:
            with open_video(path, self.cfg.DATA.DECODING_BACKEND) as reader:
                frames = reader.num_frames
            if frames == 1 and self.num_frames > 1:
                raise UsageError(f"'{path}' has 1 frame; this model needs T={self.num_frames} frames (a video). "
                                 f"Still images go to an image model (DATA.NUM_FRAMES 1)")
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.TEST.NUM_ENSEMBLE_VIEWS = 1 if frames == 1 else (num_clips or cfg.TEST.NUM_ENSEMBLE_VIEWS)
            cfg.TEST.NUM_SPATIAL_CROPS = num_crops or cfg.TEST.NUM_SPATIAL_CROPS
            return load_video_views(path, cfg)
        except DecodeError as e:
            raise UsageError(str(e)) from None

    def _as_views(self, video) -> torch.Tensor:
        if isinstance(video, (str, os.PathLike)):
            return self.views(video)
        if not isinstance(video, torch.Tensor) or video.ndim not in (4, 5):
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise UsageError(f"video must be a path, a (C, T, H, W) clip or (V, C, T, H, W) views; got {shape}")
        return video.unsqueeze(0) if video.ndim == 4 else video

    @torch.inference_mode()
    def _run(self, views: torch.Tensor, fn) -> torch.Tensor:
        chunk = max(int(self.cfg.TEST.BATCH_SIZE), 1)
        out = [fn(views[i:i + chunk].to(self.device, torch.float32, non_blocking=True)).float().cpu()
               for i in range(0, views.shape[0], chunk)]
        return torch.cat(out)

    def view_logits(self, video) -> torch.Tensor:
        """(V, num_classes) logits of the video's views."""
        return self._run(self._as_views(video), self.model)

    def view_features(self, video) -> torch.Tensor:
        """(V, D) pre-logits features of the video's views."""
        model = self.model
        return self._run(self._as_views(video), lambda x: model.forward_head(model.forward_features(x),
                                                                              pre_logits=True))

    def features(self, video) -> torch.Tensor:
        """(D,) pre-logits features averaged over the video's views."""
        return self.view_features(video).mean(0)

    def scores(self, video) -> torch.Tensor:
        """(num_classes,) class probabilities of the video: its views combined by TEST.ENSEMBLE_METHOD."""
        return probabilities(aggregate_views(self.view_logits(video), self.cfg.TEST.ENSEMBLE_METHOD))

    def predict(self, video, topk: int = 5) -> list[tuple[str, float]]:
        """[(class_name, probability), ...] of the top `topk` classes, most probable first."""
        values, labels = self.scores(video).topk(min(topk, self.cfg.MODEL.NUM_CLASSES))
        return [(self.class_names[int(i)], float(v)) for v, i in zip(values, labels)]


def probabilities(scores: torch.Tensor) -> torch.Tensor:
    """(K,) probabilities from aggregated view scores: summed softmaxes are renormalised, logits softmaxed."""
    if (scores >= 0).all() and scores.sum() > 0:
        return scores / scores.sum()
    return scores.softmax(-1)


def resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{device}' was asked for, but torch sees no CUDA device here")
    return device


def load_recognizer(checkpoint_or_zoo_name, device=None, *, config: str | None = None, overrides=(),
                    allow_partial: bool = False) -> Recognizer:
    """A Recognizer for a checkpoint (path, iopath URI; URLs and zoo names as the checkpoint loader resolves
    them). device: None = CUDA when available, else CPU. config/overrides: a config file and KEY VALUE
    overrides (needed for files that carry neither a config nor `vidformer convert` metadata)."""
    from vidformer.checkpoint import load_checkpoint_file

    source = os.fspath(checkpoint_or_zoo_name) if isinstance(checkpoint_or_zoo_name, os.PathLike) \
        else checkpoint_or_zoo_name
    ckpt = load_checkpoint_file(str(source))  # read once: it gives the config and the weights
    cfg = recognizer_config(source, config, overrides, ckpt=ckpt)
    model, report = load_model(cfg, source, ckpt=ckpt, allow_partial=allow_partial)
    dev = resolve_device(device)
    return Recognizer(model.to(dev), cfg, label_names(cfg), dev, report)
