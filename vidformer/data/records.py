"""Dataset lists: which files belong to a split and their labels, for every DATA.DATASET layout.

- "kinetics" (and "synthetic"): PATH_TO_DATA_DIR/{train,val,test}.csv, one `<path> <label>` per line
  (separated by DATA.PATH_LABEL_SEPARATOR, or by a comma or whitespace when it is empty; PySlowFast's
  three-field `<path> <ignored> <label>` is accepted too).
- "ssv2": the official something-something-v2-labels.json (template -> index) and
  something-something-v2-{train,validation}.json (records with "id" and "template"); video <id>.webm.
- "folder" / "imagefolder": PATH_TO_DATA_DIR/<split>/<class name>/<file>, classes indexed in sorted
  order of the train/ folders.
A relative path is joined to DATA.PATH_PREFIX, or to PATH_TO_DATA_DIR when PATH_PREFIX is empty.
"""

import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources

from fvcore.common.config import CfgNode

from vidformer.data.decoders import IMAGE_EXTENSIONS
from vidformer.errors import UsageError

__all__ = ["VideoRecord", "read_records", "load_label_names", "split_list_line"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
SSV2_LABELS = "something-something-v2-labels.json"
_SSV2_SPLITS = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json"}
# Shipped class-name lists (vidformer/data/labels/), keyed by (dataset, number of classes). Kinetics-400/600/700
# in the standard alphabetical index order; SSv2 names come from the dataset's own label JSON.
_SHIPPED = {("kinetics", 400): "kinetics400.txt", ("kinetics", 600): "kinetics600.txt", ("kinetics", 700): "kinetics700.txt"}


@dataclass(frozen=True)
class VideoRecord:
    path: str
    label: int


def read_records(cfg: CfgNode, split: str) -> list[VideoRecord]:
    """The videos of `split` ("train", "val" or "test") with their labels."""
    if split not in ("train", "val", "test"):
        raise UsageError(f"unknown split '{split}'; expected train, val or test")
    root = cfg.DATA.PATH_TO_DATA_DIR
    if not root:
        raise UsageError("DATA.PATH_TO_DATA_DIR is empty; set it to the folder holding train.csv / val.csv (or the SSv2 JSON files, or class folders)")
    if not os.path.isdir(root):
        raise UsageError(f"DATA.PATH_TO_DATA_DIR '{root}' is not a folder")
    dataset = cfg.DATA.DATASET
    if dataset in ("kinetics", "synthetic"):
        records = _csv_records(cfg, os.path.join(root, f"{split}.csv"))
    elif dataset == "ssv2":
        records = _ssv2_records(cfg, split)
    else:
        records = _folder_records(cfg, split, IMAGE_EXTENSIONS if dataset == "imagefolder" else VIDEO_EXTENSIONS)
    if not records:
        raise UsageError(f"the {split} split of DATA.PATH_TO_DATA_DIR '{root}' ({dataset} layout) lists no videos")
    return records


def _resolve(cfg: CfgNode, path: str) -> str:
    if os.path.isabs(path):
        return path
    return os.path.join(cfg.DATA.PATH_PREFIX or cfg.DATA.PATH_TO_DATA_DIR, path)


def _check_label(cfg: CfgNode, label: int, where: str) -> int:
    if not 0 <= label < cfg.MODEL.NUM_CLASSES:
        raise UsageError(f"{where}: label {label} is outside 0..{cfg.MODEL.NUM_CLASSES - 1} (MODEL.NUM_CLASSES {cfg.MODEL.NUM_CLASSES})")
    return label


def _csv_records(cfg: CfgNode, list_file: str) -> list[VideoRecord]:
    if not os.path.isfile(list_file):
        raise UsageError(f"DATA.PATH_TO_DATA_DIR '{cfg.DATA.PATH_TO_DATA_DIR}' has no {os.path.basename(list_file)}; expected lines '<path> <label>'")
    records = []
    with open(list_file) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{list_file}:{line_number}"
            path, label = split_list_line(line, cfg.DATA.PATH_LABEL_SEPARATOR, where)
            records.append(VideoRecord(_resolve(cfg, path), _check_label(cfg, label, where)))
    return records


def split_list_line(line: str, separator: str, where: str) -> tuple[str, int]:
    """`<path> <label>` (or PySlowFast's `<path> <ignored> <label>`) -> (path, label); `where` names
    file:line in the error. An empty separator means a comma if the line has one, else whitespace."""
    line = line.strip()
    if separator:
        fields = line.split(separator)
    else:
        fields = line.split(",") if "," in line else line.split()
    if len(fields) not in (2, 3) or not re.fullmatch(r"-?\d+", fields[-1].strip()):
        raise UsageError(f"{where}: cannot read {line!r}; expected '<path> <label>' with an integer label")
    return fields[0].strip(), int(fields[-1])


def _load_json(path: str):
    if not os.path.isfile(path):
        raise UsageError(f"the SSv2 layout needs '{path}' (from the official Something-Something-v2 download)")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UsageError(f"'{path}' is not valid JSON: {e}") from None


def _ssv2_records(cfg: CfgNode, split: str) -> list[VideoRecord]:
    root = cfg.DATA.PATH_TO_DATA_DIR
    labels = _load_json(os.path.join(root, SSV2_LABELS))
    # the test split has no public labels, so "test" reads the validation list (as PySlowFast does)
    list_file = os.path.join(root, _SSV2_SPLITS["train" if split == "train" else "val"])
    records = []
    for position, entry in enumerate(_load_json(list_file)):
        try:
            video_id, template = str(entry["id"]), entry["template"]
        except (KeyError, TypeError):
            raise UsageError(f"{list_file}: record {position} has no 'id' and 'template'") from None
        # records write objects as "[something]"; the label file has the same text without brackets
        key = template.replace("[", "").replace("]", "")
        if key not in labels:
            raise UsageError(f"{list_file}: record {position} (id {video_id}) has template {template!r}, which {SSV2_LABELS} does not list")
        label = _check_label(cfg, int(labels[key]), f"{list_file}: record {position}")
        records.append(VideoRecord(_resolve(cfg, f"{video_id}.webm"), label))
    return records


def _class_folders(folder: str) -> list[str]:
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def _folder_records(cfg: CfgNode, split: str, extensions: tuple[str, ...]) -> list[VideoRecord]:
    root = cfg.DATA.PATH_TO_DATA_DIR
    folder = os.path.join(root, split)
    if split == "test" and not os.path.isdir(folder):
        folder = os.path.join(root, "val")
    if not os.path.isdir(folder):
        raise UsageError(f"DATA.PATH_TO_DATA_DIR '{root}' has no '{split}' folder; expected {split}/<class name>/<files>")
    classes = _class_folders(os.path.join(root, "train") if os.path.isdir(os.path.join(root, "train")) else folder)
    index = {name: k for k, name in enumerate(classes)}
    records = []
    for name in _class_folders(folder):
        if name not in index:
            raise UsageError(f"class folder '{os.path.join(folder, name)}' has no counterpart in '{os.path.join(root, 'train')}'")
        label = _check_label(cfg, index[name], os.path.join(folder, name))
        for file in sorted(os.listdir(os.path.join(folder, name))):
            if file.lower().endswith(extensions):
                records.append(VideoRecord(os.path.join(folder, name, file), label))
    return records


def _read_names(path: str) -> list[str]:
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def load_label_names(cfg: CfgNode) -> list[str] | None:
    """Class names indexed by label, or None when none are known.

    Looked up in order: DATA.LABEL_NAMES_FILE; PATH_TO_DATA_DIR/classes.txt; the SSv2 label JSON or
    the class folders; the list shipped for the dataset and MODEL.NUM_CLASSES (Kinetics-400/600/700).
    """
    num_classes = cfg.MODEL.NUM_CLASSES
    if cfg.DATA.LABEL_NAMES_FILE:
        if not os.path.isfile(cfg.DATA.LABEL_NAMES_FILE):
            raise UsageError(f"DATA.LABEL_NAMES_FILE '{cfg.DATA.LABEL_NAMES_FILE}' does not exist")
        names = _read_names(cfg.DATA.LABEL_NAMES_FILE)
        if len(names) != num_classes:
            raise UsageError(f"DATA.LABEL_NAMES_FILE '{cfg.DATA.LABEL_NAMES_FILE}' has {len(names)} names but MODEL.NUM_CLASSES is {num_classes}")
        return names
    for names in _found_names(cfg):
        if names is not None and len(names) == num_classes:
            return names
        if names is not None:
            logger.warning("ignoring a class-name list of %d names: MODEL.NUM_CLASSES is %d", len(names), num_classes)
    return None


def _found_names(cfg: CfgNode):
    root, dataset = cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.DATASET
    if root and os.path.isfile(os.path.join(root, "classes.txt")):
        yield _read_names(os.path.join(root, "classes.txt"))
    if root and dataset == "ssv2" and os.path.isfile(os.path.join(root, SSV2_LABELS)):
        labels = _load_json(os.path.join(root, SSV2_LABELS))
        yield [name for name, _ in sorted(labels.items(), key=lambda item: int(item[1]))]
    if root and dataset in ("folder", "imagefolder"):
        for split in ("train", "val"):
            if os.path.isdir(os.path.join(root, split)):
                yield _class_folders(os.path.join(root, split))
                break
    shipped = _SHIPPED.get(("kinetics" if dataset == "synthetic" else dataset, cfg.MODEL.NUM_CLASSES))
    if shipped:
        yield _read_names(str(resources.files("vidformer.data").joinpath("labels", shipped)))
