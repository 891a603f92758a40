"""The model zoo: one entry per published checkpoint that loads into a vidformer model, by name.

A name is `MODEL.DATASET_TxR` (`mvitv2_s.k400_16x4`, `uniformer_s.in1k`, `pytorchvideo/x3d_m.k400_16x5`):
the registry model it loads into, then the data it was trained on and its clip geometry. A second copy
of the same weights on another host gets a suffix (`_tv` torchvision, `_timm`, `_hf` HuggingFace).
Every entry carries where to get the file (a direct URL, or the page of a host that needs a browser),
its hash where the publisher gave one, the layout the loader will detect, the published top-1 with its
views (clips x crops), and the config in configs/ that reproduces or fine-tunes it.

This module is data and look-ups only (it imports only vidformer.errors), so models/registry.py
(create_model(pretrained=...)) and the command line can read it; fetching lives in checkpoint/remote.py.
Figures and URLs are the publishers' own: PySlowFast MODEL_ZOO.md and projects/mvitv2/README.md,
facebookresearch/mvit README, Sense-X/UniFormer image/video READMEs and HuggingFace Sense-X,
sail-sg/poolformer README and timm's pretrained cfgs, microsoft/CvT README and HuggingFace microsoft/cvt-*,
blackfeather-wang/Dynamic-Vision-Transformer README, torchvision's MViT_V2_S_Weights, pytorchvideo's
model hub and docs/source/model_zoo.md.
"""

import difflib
import fnmatch
from dataclasses import dataclass

from vidformer.errors import UsageError

VIDEO_MEAN, VIDEO_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# dataset tag -> (name, classes)
DATASETS = {
    "k400": ("Kinetics-400", 400),
    "k600": ("Kinetics-600", 600),
    "ssv2": ("Something-Something-v2", 174),
    "in1k": ("ImageNet-1k", 1000),
}

ZOO_PREFIX = "zoo:"


@dataclass(frozen=True)
class PretrainedEntry:
    """One published checkpoint. `url` is empty where the host needs a browser; `page` then says where."""

    name: str
    tag: str                 # dataset tag (DATASETS), what create_model(pretrained="k400") matches
    num_frames: int          # 1 = image model
    sampling_rate: int
    crop_size: int
    layout: str              # the checkpoint layout the loader detects ("native" or a family's layout name)
    top1: float | None       # published top-1 (%)
    views: str               # "clips x crops" of that top-1
    config: str              # configs/... that reproduces or fine-tunes it ("" if none)
    url: str = ""            # direct download
    page: str = ""           # where to fetch it by hand when there is no direct URL
    filename: str = ""       # name in the cache (default: the URL's last path part)
    sha256: str = ""         # full hash or a prefix ("" where the publisher gave none)
    mean: tuple[float, float, float] = VIDEO_MEAN
    std: tuple[float, float, float] = VIDEO_STD
    source: str = ""         # who published it
    notes: str = ""

    @property
    def model(self) -> str:
        """The registry name the checkpoint loads into."""
        return self.name.split(".")[0]

    @property
    def dataset(self) -> str:
        return DATASETS[self.tag][0]

    @property
    def num_classes(self) -> int:
        return DATASETS[self.tag][1]

    @property
    def cache_name(self) -> str:
        """The file name under the cache's checkpoints/ folder."""
        return self.filename or self.url.rstrip("/").split("/")[-1].split("?")[0]

    @property
    def geometry(self) -> str:
        if self.num_frames == 1:
            return f"image {self.crop_size}"
        return f"{self.num_frames}x{self.sampling_rate}, {self.crop_size}"


def _slowfast(name, file, tag, frames, rate, crop, top1, views, config, notes=""):
    return PretrainedEntry(name, tag, frames, rate, crop, "pyslowfast", top1, views, config,
                           url=f"https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/mvitv2/pysf_video_models/{file}",
                           source="PySlowFast", notes=notes)


def _mvit_image(name, file, top1, config):
    return PretrainedEntry(name, "in1k", 1, 1, 224, "mvit-image", top1, "1 x 1", config,
                           url=f"https://dl.fbaipublicfiles.com/mvit/mvitv2_models/{file}",
                           mean=IMAGENET_MEAN, std=IMAGENET_STD, source="facebookresearch/mvit")


def _timm(name, hub_id, layout, top1, config):
    return PretrainedEntry(name, "in1k", 1, 1, 224, layout, top1, "1 x 1", config,
                           url=f"https://huggingface.co/timm/{hub_id}/resolve/main/model.safetensors",
                           filename=f"{hub_id}.safetensors", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                           source=f"timm ({hub_id})")


_UNIFORMER_DRIVE = "https://drive.google.com/file/d/{}/view"
_UNIFORMER_HF = "https://huggingface.co/Sense-X/uniformer_video/resolve/main/{}"


def _uniformer_video(name, file, frames, rate, top1, views, config, *, drive="", hf=False):
    tag = name.split(".")[1].split("_")[0]
    return PretrainedEntry(name, tag, frames, rate, 224, "uniformer_official_video", top1, views, config,
                           url=_UNIFORMER_HF.format(file) if hf else "",
                           page=_UNIFORMER_DRIVE.format(drive) if drive else "", filename=file,
                           source="Sense-X/UniFormer" + (" (HuggingFace Sense-X/uniformer_video)" if hf else ""))


def _poolformer(size, top1):
    return PretrainedEntry(f"poolformer_{size}.in1k", "in1k", 1, 1, 224, "poolformer_official", top1, "1 x 1",
                           f"configs/imagenet/poolformer_{size}.yaml",
                           url=f"https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_{size}.pth.tar",
                           mean=IMAGENET_MEAN, std=IMAGENET_STD, source="sail-sg/poolformer")


_CVT_ONEDRIVE = "https://1drv.ms/u/s!AhIXJn_J-blW9RzF3rMW7SsLHa8h?e=blQ0Al"


def _cvt(name, official_file, hf_id, crop, top1, config, notes=""):
    common = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, notes=notes)
    official = PretrainedEntry(name, "in1k", 1, 1, crop, "cvt_official", top1, "1 x 1", config, page=_CVT_ONEDRIVE,
                               filename=official_file, source="microsoft/CvT (OneDrive folder)", **common)
    hf = PretrainedEntry(name + "_hf", "in1k", 1, 1, crop, "cvt_huggingface", top1, "1 x 1", config,
                         url=f"https://huggingface.co/microsoft/{hf_id}/resolve/main/pytorch_model.bin",
                         filename=f"microsoft_{hf_id}.bin", source=f"HuggingFace microsoft/{hf_id}", **common)
    return official, hf


_PTV = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/{}"


def _ptv(hub_name, file, frames, rate, crop, top1, views="10 x 3", tag="k400"):
    return PretrainedEntry(f"pytorchvideo/{hub_name}.{tag}_{frames}x{rate}", tag, frames, rate, crop, "pytorchvideo",
                           top1, views, "", url=_PTV.format(file), source="pytorchvideo model hub")


ZOO: tuple[PretrainedEntry, ...] = (
    # MViTv2, PySlowFast (projects/mvitv2/README.md). Views: clips x crops.
    _slowfast("mvitv2_s.k400_16x4", "MViTv2_S_16x4_k400_f302660347.pyth", "k400", 16, 4, 224, 81.0, "5 x 1",
              "configs/kinetics400/mvitv2_s_16x4.yaml"),
    _slowfast("mvitv2_b.k400_32x3", "MViTv2_B_32x3_k400_f304025456.pyth", "k400", 32, 3, 224, 82.9, "5 x 1",
              "configs/kinetics400/mvitv2_b_32x3.yaml"),
    _slowfast("mvitv2_l.k400_40x3_312", "MViTv2_L_40x3_k400_f306903192.pyth", "k400", 40, 3, 312, 86.1, "5 x 3",
              "configs/kinetics400/mvitv2_l_40x3_312.yaml", notes="ImageNet-21K pre-trained"),
    _slowfast("mvitv2_s.ssv2_16x4", "MViTv2_S_16x4_ssv2_f308341823.pyth", "ssv2", 16, 4, 224, 68.2, "1 x 3",
              "configs/ssv2/mvitv2_s_16x4.yaml", notes="fine-tuned from mvitv2_s.k400_16x4"),
    _slowfast("mvitv2_b.ssv2_32x3", "MViTv2_B_32x3_ssv2_f305803282.pyth", "ssv2", 32, 3, 224, 70.5, "1 x 3",
              "configs/ssv2/mvitv2_b_32x3.yaml", notes="fine-tuned from mvitv2_b.k400_32x3"),
    _slowfast("mvitv2_l.ssv2_40x3_312", "MViTv2_L_40x3_ssv2_f309603968.pyth", "ssv2", 40, 3, 312, 73.3, "1 x 3", "",
              notes="ImageNet-21K + K400 pre-trained"),
    # torchvision's port of the PySlowFast MViTv2-S; 80.757 measured by torchvision (5 clips at 7.5 fps).
    PretrainedEntry("mvitv2_s.k400_16x4_tv", "k400", 16, 4, 224, "torchvision", 80.8, "5 x 1",
                    "configs/kinetics400/mvitv2_s_16x4.yaml", url="https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth",
                    sha256="ae3be167", source="torchvision MViT_V2_S_Weights.KINETICS400_V1"),
    # MViTv2 image models, facebookresearch/mvit, and timm's copies of the same weights.
    _mvit_image("mvitv2_t.in1k", "MViTv2_T_in1k.pyth", 82.3, "configs/imagenet/mvitv2_t.yaml"),
    _mvit_image("mvitv2_s.in1k", "MViTv2_S_in1k.pyth", 83.6, "configs/imagenet/mvitv2_s.yaml"),
    _mvit_image("mvitv2_b.in1k", "MViTv2_B_in1k.pyth", 84.4, "configs/imagenet/mvitv2_b.yaml"),
    _mvit_image("mvitv2_l.in1k", "MViTv2_L_in1k.pyth", 85.3, ""),
    _timm("mvitv2_t.in1k_timm", "mvitv2_tiny.fb_in1k", "timm", 82.3, "configs/imagenet/mvitv2_t.yaml"),
    _timm("mvitv2_s.in1k_timm", "mvitv2_small.fb_in1k", "timm", 83.6, "configs/imagenet/mvitv2_s.yaml"),
    _timm("mvitv2_b.in1k_timm", "mvitv2_base.fb_in1k", "timm", 84.4, "configs/imagenet/mvitv2_b.yaml"),
    # UniFormer image models (HuggingFace Sense-X/uniformer_image; also on the README's Google Drive).
    PretrainedEntry("uniformer_s.in1k", "in1k", 1, 1, 224, "uniformer_official_image", 82.9, "1 x 1",
                    "configs/imagenet/uniformer_s.yaml",
                    url="https://huggingface.co/Sense-X/uniformer_image/resolve/main/uniformer_small_in1k.pth",
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, source="Sense-X/UniFormer (HuggingFace Sense-X/uniformer_image)"),
    PretrainedEntry("uniformer_b.in1k", "in1k", 1, 1, 224, "uniformer_official_image", 83.8, "1 x 1",
                    "configs/imagenet/uniformer_b.yaml",
                    url="https://huggingface.co/Sense-X/uniformer_image/resolve/main/uniformer_base_in1k.pth",
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, source="Sense-X/UniFormer (HuggingFace Sense-X/uniformer_image)"),
    # UniFormer video models: the README's Google Drive files, and those HuggingFace Sense-X/uniformer_video hosts.
    _uniformer_video("uniformer_s.k400_8x8", "uniformer_small_k400_8x8.pth", 8, 8, 78.4, "4 x 1",
                     "configs/kinetics400/uniformer_s_8x8.yaml", drive="1-kitVTkWErHXI_x-sLItvK9-sOmb53j6"),
    _uniformer_video("uniformer_s.k400_16x4", "uniformer_small_k400_16x4.pth", 16, 4, 80.8, "4 x 1",
                     "configs/kinetics400/uniformer_s_16x4.yaml", drive="1-jGZIIuTM5IYIpqkNTojhGhfMc7Gu9Kt"),
    _uniformer_video("uniformer_s.k400_16x8", "uniformer_small_k400_16x8.pth", 16, 8, 80.8, "4 x 1", "", hf=True),
    _uniformer_video("uniformer_b.k400_16x4", "uniformer_base_k400_16x4.pth", 16, 4, 82.0, "4 x 1",
                     "configs/kinetics400/uniformer_b_16x4.yaml", drive="15ipzFaZdTt-aHv7jcr_h_vgYD2X7D6AD"),
    _uniformer_video("uniformer_b.k400_32x4", "uniformer_base_k400_32x4.pth", 32, 4, 82.9, "4 x 1",
                     "configs/kinetics400/uniformer_b_32x4.yaml", drive="1gHxx8cr1H0CNvngj1kB9ArgcPfJtqjCV"),
    _uniformer_video("uniformer_s.k600_16x4", "uniformer_small_k600_16x4.pth", 16, 4, 82.8, "4 x 1",
                     "configs/kinetics600/uniformer_s_16x4.yaml", drive="1-dqzjm5RZVspWHQLRD4S1vo4_6jyVltb"),
    _uniformer_video("uniformer_s.k600_16x8", "uniformer_small_k600_16x8.pth", 16, 8, 82.7, "4 x 1", "", hf=True),
    _uniformer_video("uniformer_b.k600_16x4", "uniformer_base_k600_16x4.pth", 16, 4, 84.0, "4 x 1",
                     "configs/kinetics600/uniformer_b_16x4.yaml", drive="1nBQCBCsCflhZ4OGUoGB3pAkc_GDau7vd"),
    _uniformer_video("uniformer_b.k600_32x4", "uniformer_base_k600_32x4.pth", 32, 4, 84.5, "4 x 1", "", hf=True),
    _uniformer_video("uniformer_s.ssv2_16_prek400", "uniformer_small_sthv2_16_prek400.pth", 16, 4, 67.7, "1 x 3",
                     "configs/ssv2/uniformer_s_16x4.yaml", drive="1-Wq22024HB7tT8kPX6eSMn2GUNMI-_gY"),
    _uniformer_video("uniformer_s.ssv2_16_prek600", "uniformer_small_sthv2_16_prek600.pth", 16, 4, 69.4, "1 x 3",
                     "configs/ssv2/uniformer_s_16x4.yaml", drive="1-V1mQp4fIIYhaXUWCgZXkJ0H6ne0Z8rz"),
    _uniformer_video("uniformer_b.ssv2_32_prek400", "uniformer_base_sthv2_32_prek400.pth", 32, 4, 71.1, "1 x 3",
                     "configs/ssv2/uniformer_b_32x4.yaml", drive="1-rpMARXnyvyj6YUJkIvVqtna86egpjoS"),
    _uniformer_video("uniformer_b.ssv2_32_prek600", "uniformer_base_sthv2_32_prek600.pth", 32, 4, 71.2, "1 x 3",
                     "configs/ssv2/uniformer_b_32x4.yaml", hf=True),
    # PoolFormer: the official GitHub release files and timm's HuggingFace copies.
    _poolformer("s12", 77.2), _poolformer("s24", 80.3), _poolformer("s36", 81.4),
    _poolformer("m36", 82.1), _poolformer("m48", 82.5),
    _timm("poolformer_s12.in1k_timm", "poolformer_s12.sail_in1k", "timm_poolformer", 77.2,
          "configs/imagenet/poolformer_s12.yaml"),
    _timm("poolformer_s24.in1k_timm", "poolformer_s24.sail_in1k", "timm_poolformer", 80.3,
          "configs/imagenet/poolformer_s24.yaml"),
    _timm("poolformer_s36.in1k_timm", "poolformer_s36.sail_in1k", "timm_poolformer", 81.4,
          "configs/imagenet/poolformer_s36.yaml"),
    _timm("poolformer_m36.in1k_timm", "poolformer_m36.sail_in1k", "timm_poolformer", 82.1,
          "configs/imagenet/poolformer_m36.yaml"),
    _timm("poolformer_m48.in1k_timm", "poolformer_m48.sail_in1k", "timm_poolformer", 82.5,
          "configs/imagenet/poolformer_m48.yaml"),
    # CvT: microsoft/CvT's OneDrive folder (a browser) and HuggingFace microsoft/cvt-* (direct).
    *_cvt("cvt_13.in1k", "CvT-13-224x224-IN-1k.pth", "cvt-13", 224, 81.6, "configs/imagenet/cvt_13.yaml"),
    *_cvt("cvt_13.in1k_384", "CvT-13-384x384-IN-1k.pth", "cvt-13-384", 384, 83.0, "configs/imagenet/cvt_13_384.yaml"),
    *_cvt("cvt_13.in22k_in1k_384", "CvT-13-384x384-IN-22k.pth", "cvt-13-384-22k", 384, 83.3,
          "configs/imagenet/cvt_13_384.yaml", notes="ImageNet-22k pre-trained, fine-tuned on 1k"),
    *_cvt("cvt_21.in1k", "CvT-21-224x224-IN-1k.pth", "cvt-21", 224, 82.5, "configs/imagenet/cvt_21.yaml"),
    *_cvt("cvt_21.in1k_384", "CvT-21-384x384-IN-1k.pth", "cvt-21-384", 384, 83.3, "configs/imagenet/cvt_21_384.yaml"),
    *_cvt("cvt_21.in22k_in1k_384", "CvT-21-384x384-IN-22k.pth", "cvt-21-384-22k", 384, 84.9,
          "configs/imagenet/cvt_21_384.yaml", notes="ImageNet-22k pre-trained, fine-tuned on 1k"),
    *_cvt("cvt_w24.in22k_in1k_384", "CvT-w24-384x384-IN-22k.pth", "cvt-w24-384-22k", 384, 87.6,
          "", notes="ImageNet-22k pre-trained, fine-tuned on 1k"),
    # DVT on DeiT-S: Tsinghua Cloud serves the file directly (?dl=1); also on the README's Google Drive.
    PretrainedEntry("dvt_deit_s.in1k", "in1k", 1, 1, 224, "dvt_official", None, "adaptive", "configs/imagenet/dvt_deit_s.yaml",
                    url="https://cloud.tsinghua.edu.cn/f/c415017423dd40ab8e72/?dl=1",
                    page="https://drive.google.com/file/d/1oXDm1LbJhTRgJn3W_aWGV_6uGM3zpZib/view",
                    filename="dvt_deit_small.pth", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    source="blackfeather-wang/Dynamic-Vision-Transformer",
                    notes="a budget curve, not one top-1: 81.7 at 4.6 GFLOPs (paper Table 4)"),
    # pytorchvideo model hub baselines (docs/source/model_zoo.md; views = clips x crops).
    _ptv("x3d_xs", "X3D_XS.pyth", 4, 12, 160, 69.12),
    _ptv("x3d_s", "X3D_S.pyth", 13, 6, 160, 73.33),
    _ptv("x3d_m", "X3D_M.pyth", 16, 5, 224, 75.94),
    _ptv("x3d_l", "X3D_L.pyth", 16, 5, 312, 77.44),
    _ptv("slowfast_r50", "SLOWFAST_8x8_R50.pyth", 32, 2, 224, 76.94),
    _ptv("slowfast_r101", "SLOWFAST_8x8_R101.pyth", 32, 2, 224, 77.90),
    _ptv("slow_r50", "SLOW_8x8_R50.pyth", 8, 8, 224, 74.58),
    _ptv("c2d_r50", "C2D_8x8_R50.pyth", 8, 8, 224, 71.46),
    _ptv("i3d_r50", "I3D_8x8_R50.pyth", 8, 8, 224, 73.27),
    _ptv("r2plus1d_r50", "R2PLUS1D_16x4_R50.pyth", 16, 4, 224, 76.01),
    _ptv("csn_r101", "CSN_32x2_R101.pyth", 32, 2, 224, 77.00),
    _ptv("mvit_base_16x4", "MVIT_B_16x4.pyth", 16, 4, 224, 78.85, views="5 x 1"),
    _ptv("mvit_base_32x3", "MVIT_B_32x3_f294077834.pyth", 32, 3, 224, 80.30, views="5 x 1"),
)

_BY_NAME = {e.name: e for e in ZOO}
assert len(_BY_NAME) == len(ZOO), "zoo names must be unique"


def list_pretrained(pattern: str = "*") -> list[PretrainedEntry]:
    """Zoo entries whose name or model matches a shell-style pattern (`"mvitv2_s"`, `"*.k400*"`), in table order."""
    return [e for e in ZOO if fnmatch.fnmatch(e.name, pattern) or fnmatch.fnmatch(e.model, pattern)]


def zoo_name(source) -> str | None:
    """The zoo name `source` refers to (`zoo:NAME` or a bare zoo name), else None."""
    if not isinstance(source, str):
        return None
    name = source[len(ZOO_PREFIX):] if source.startswith(ZOO_PREFIX) else source
    if name in _BY_NAME:
        return name
    if source.startswith(ZOO_PREFIX):
        close = difflib.get_close_matches(name, _BY_NAME, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `vidformer models --pretrained`"
        raise UsageError(f"'{source}' is no model-zoo entry{hint}")
    return None


def get_entry(name: str) -> PretrainedEntry:
    """The entry of a zoo name (with or without `zoo:`); a UsageError names close matches."""
    found = zoo_name(name if name.startswith(ZOO_PREFIX) else ZOO_PREFIX + name)
    return _BY_NAME[found]


def entry_for_url(url: str) -> PretrainedEntry | None:
    """The entry whose direct URL this is (so a pasted zoo URL shares the zoo's cache file and hash)."""
    return next((e for e in ZOO if e.url and e.url == url), None)


def pick_entry(model: str, pretrained: str, num_frames: int | None = None, img_size: int | None = None,
               *, first: bool = False) -> PretrainedEntry:
    """The entry of `model` that create_model(model, pretrained=...) means: `MODEL.SUFFIX`'s suffix or a
    dataset tag ("k400"), or with first=True any; among several, the one matching num_frames / img_size,
    else the first listed."""
    own = [e for e in ZOO if e.model == model]
    matches = own if first else [e for e in own if e.name == f"{model}.{pretrained}" or e.tag == pretrained]
    for key, want in (("num_frames", num_frames), ("crop_size", img_size)):
        narrowed = [e for e in matches if want is None or getattr(e, key) == want]
        matches = narrowed or matches
    if not matches:
        known = ", ".join(e.name for e in own) or "none"
        asked = "pretrained=True" if first else f"pretrained={pretrained!r}"
        raise UsageError(f"no published checkpoint of {model} matches {asked}; its zoo entries: {known}")
    return matches[0]


def render_markdown() -> str:
    """The README's model-zoo table (tests/test_zoo.py keeps the README equal to it)."""
    lines = ["| name | model | data (classes) | frames x rate, crop | published top-1 (clips x crops) | "
             "layout | download | config |", "|---|---|---|---|---|---|---|---|"]
    for e in ZOO:
        top1 = f"{e.top1} ({e.views})" if e.top1 is not None else e.notes
        where = f"[file]({e.url})" if e.url else f"[page]({e.page}) (browser)"
        config = f"`{e.config}`" if e.config else "—"
        lines.append(f"| `{e.name}` | `{e.model}` | {e.dataset} ({e.num_classes}) | {e.geometry} | {top1} | "
                     f"`{e.layout}` | {where} | {config} |")
    return "\n".join(lines)
