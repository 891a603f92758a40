"""Dataset lists: which files belong to a split and their labels, for every DATA.DATASET layout.

- "kinetics" (and "synthetic"): PATH_TO_DATA_DIR/{train,val,test}.csv, one `<path> <label>` per line
  (separated by DATA.PATH_LABEL_SEPARATOR, or by a comma or whitespace when it is empty; PySlowFast's
  three-field `<path> <ignored> <label>` is accepted too).
- "ssv2": the official something-something-v2-labels.json (template -> index) and
  something-something-v2-{train,validation}.json (records with "id" and "template"); video <id>.webm.
- "folder" / "imagefolder": PATH_TO_DATA_DIR/<split>/<class name>/<file>, classes indexed in sorted
  order of the train/ folders.
- "framelist": PySlowFast's frame lists (SSv2, Charades) PATH_TO_DATA_DIR/{train,val,test}.csv, a header
  `original_vido_id video_id frame_id path labels` then one line per frame; a video is its lines in
  order. Its label is the labels column (one class per video), or, where that column is empty (the
  SSv2 frame lists), the SSv2 label JSON files beside the lists.
- "rawframes": mmaction2's lists PATH_TO_DATA_DIR/{train,val,test}.csv, `<frame folder> <num_frames>
  <label>` per line, frames named DATA.FRAME_TEMPLATE from DATA.FRAME_START_INDEX.
  For both frame layouts "test" reads val.csv when there is no test.csv (as PySlowFast's SSv2 does).
- "ucf101": the official split files (ucfTrainTestlist/: classInd.txt, trainlist0N.txt `Class/v_x.avi <1-based
  label>`, testlist0N.txt `Class/v_x.avi`), N = DATA.SPLIT_ID; val and test read testlist0N.txt.
- "hmdb51": the official split files (testTrainMulti_7030_splits/<class>_test_splitN.txt, `<name>.avi 0|1|2`,
  1 = train, 2 = test) for videos <class>/<name>.avi; classes indexed in sorted order; val and test read 2.
A relative path is joined to DATA.PATH_PREFIX, or to PATH_TO_DATA_DIR when PATH_PREFIX is empty.

The UCF101 / HMDB51 split files are read here rather than by pytorchvideo.data (which imports on
current torchvision): its Ucf101 reads only `<path> <int label>` lists, so trainlist's 1-based labels
would be off by one and testlist's missing ones -1, and Hmdb51LabeledVideoPaths gives class names, not
indices, and returns (instead of raising) its errors.
"""

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources

from fvcore.common.config import CfgNode

from vidformer.data.decoders import IMAGE_EXTENSIONS
from vidformer.data.frames import FrameFiles, check_frame_template
from vidformer.errors import ConfigError, UsageError

__all__ = ["VideoRecord", "read_records", "load_label_names", "split_list_line"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
SSV2_LABELS = "something-something-v2-labels.json"
FRAME_LIST_HEADER = ("original_vido_id", "video_id", "frame_id", "path", "labels")  # PySlowFast's spelling
UCF101_SPLITS = "ucfTrainTestlist"
HMDB51_SPLITS = "testTrainMulti_7030_splits"
_SSV2_SPLITS = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json"}
# Shipped class-name lists (vidformer/data/labels/), keyed by (dataset, number of classes). Kinetics-400/600/700
# in the standard alphabetical index order; SSv2 names come from the dataset's own label JSON.
_SHIPPED = {("kinetics", 400): "kinetics400.txt", ("kinetics", 600): "kinetics600.txt", ("kinetics", 700): "kinetics700.txt"}


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split: `path` names it (in logs, failure counts and test results); a video stored
    as image files also has `frames`, which is then what is read."""

    path: str
    label: int
    frames: FrameFiles | None = None

    @property
    def source(self) -> "str | FrameFiles":
        """What vidformer.data.frames.open_source reads: the frames, else the file at `path`."""
        return self.frames if self.frames is not None else self.path


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
    elif dataset == "framelist":
        records = _framelist_records(cfg, _frame_list_file(root, split), split)
    elif dataset == "rawframes":
        records = _rawframes_records(cfg, _frame_list_file(root, split))
    elif dataset == "ucf101":
        records = _ucf101_records(cfg, split)
    elif dataset == "hmdb51":
        records = _hmdb51_records(cfg, split)
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


def _ssv2_labels(cfg: CfgNode, split: str) -> dict[str, int]:
    """{video id: label} of the official SSv2 JSON files, in their order."""
    root = cfg.DATA.PATH_TO_DATA_DIR
    labels = _load_json(os.path.join(root, SSV2_LABELS))
    # the test split has no public labels, so "test" reads the validation list (as PySlowFast does)
    list_file = os.path.join(root, _SSV2_SPLITS["train" if split == "train" else "val"])
    videos = {}
    for position, entry in enumerate(_load_json(list_file)):
        try:
            video_id, template = str(entry["id"]), entry["template"]
        except (KeyError, TypeError):
            raise UsageError(f"{list_file}: record {position} has no 'id' and 'template'") from None
        # records write objects as "[something]"; the label file has the same text without brackets
        key = template.replace("[", "").replace("]", "")
        if key not in labels:
            raise UsageError(f"{list_file}: record {position} (id {video_id}) has template {template!r}, which {SSV2_LABELS} does not list")
        videos[video_id] = _check_label(cfg, int(labels[key]), f"{list_file}: record {position}")
    return videos


def _ssv2_records(cfg: CfgNode, split: str) -> list[VideoRecord]:
    return [VideoRecord(_resolve(cfg, f"{video_id}.webm"), label) for video_id, label in _ssv2_labels(cfg, split).items()]


def _frame_list_file(root: str, split: str) -> str:
    if split == "test" and not os.path.isfile(os.path.join(root, "test.csv")):
        return os.path.join(root, "val.csv")
    return os.path.join(root, f"{split}.csv")


def _frames_fps(cfg: CfgNode) -> float:
    return cfg.DATA.FRAMES_FPS or cfg.DATA.TARGET_FPS


def _framelist_records(cfg: CfgNode, list_file: str, split: str) -> list[VideoRecord]:
    if not os.path.isfile(list_file):
        raise UsageError(f"DATA.PATH_TO_DATA_DIR '{cfg.DATA.PATH_TO_DATA_DIR}' has no {os.path.basename(list_file)}; expected "
                         f"PySlowFast's frame list: the header '{' '.join(FRAME_LIST_HEADER)}', then one line per frame")
    frames: dict[str, list[str]] = {}  # video -> its frame paths, in the list's order (PySlowFast's)
    labels: dict[str, set[int]] = {}
    first_line: dict[str, str] = {}
    with open(list_file) as f:
        header = f.readline().split()
        if [name.replace("original_video_id", "original_vido_id") for name in header] != list(FRAME_LIST_HEADER):
            raise UsageError(f"{list_file}:1: expected the frame-list header '{' '.join(FRAME_LIST_HEADER)}', got {' '.join(header)!r}")
        for number, line in enumerate(f, start=2):
            row = line.split()
            if not row:
                continue
            where = f"{list_file}:{number}"
            # labels: "" (SSv2), one class, or comma-separated classes (Charades)
            names = [x for x in row[-1].replace('"', "").split(",") if x] if len(row) == 5 else None
            if names is None or not all(re.fullmatch(r"\d+", x) for x in names):
                raise UsageError(f"{where}: cannot read {line.strip()!r}; expected '<video> <video index> <frame index> "
                                 "<frame path> <labels>' (labels: \"\", a class index, or indices separated by commas)")
            video = row[0]
            frames.setdefault(video, []).append(_resolve(cfg, row[3]))
            labels.setdefault(video, set()).update(int(x) for x in names)
            first_line.setdefault(video, where)
    if any(not found for found in labels.values()):
        if not os.path.isfile(os.path.join(cfg.DATA.PATH_TO_DATA_DIR, SSV2_LABELS)):
            video = next(v for v, found in labels.items() if not found)
            raise UsageError(f"{first_line[video]}: video {video} has no labels, and there is no {SSV2_LABELS} beside the "
                             "list to look it up (the SSv2 frame lists take labels from the official JSON files)")
        ssv2 = _ssv2_labels(cfg, split)
        for video, found in labels.items():
            if not found:
                if video not in ssv2:
                    raise UsageError(f"{first_line[video]}: video {video} has no labels and the SSv2 JSON does not list it")
                found.add(ssv2[video])
    folders = Counter(os.path.dirname(paths[0]) for paths in frames.values())
    records = []
    for video, paths in frames.items():
        if len(labels[video]) > 1:
            raise UsageError(f"{first_line[video]}: video {video} has labels {sorted(labels[video])}, several classes (a multi-label "
                             "list such as Charades); vidformer trains one class per video, so give each video one label")
        label = _check_label(cfg, labels[video].pop(), first_line[video])
        folder = os.path.dirname(paths[0])
        name = folder if folders[folder] == 1 else paths[0]  # a name that tells the video apart
        records.append(VideoRecord(name, label, FrameFiles.from_paths(paths, _frames_fps(cfg))))
    return records


def _rawframes_records(cfg: CfgNode, list_file: str) -> list[VideoRecord]:
    template, start = cfg.DATA.FRAME_TEMPLATE, cfg.DATA.FRAME_START_INDEX
    problem = check_frame_template(template)
    if problem:
        raise ConfigError(f"DATA.FRAME_TEMPLATE {template!r}: {problem}; expected a file name like 'img_{{:05d}}.jpg'")
    expected = "'<frame folder> <num_frames> <label>' (mmaction2's rawframes list)"
    if not os.path.isfile(list_file):
        raise UsageError(f"DATA.PATH_TO_DATA_DIR '{cfg.DATA.PATH_TO_DATA_DIR}' has no {os.path.basename(list_file)}; expected lines {expected}")
    records = []
    with open(list_file) as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{list_file}:{number}"
            if len(fields) != 3 or not (fields[1].isdigit() and re.fullmatch(r"-?\d+", fields[2])):
                raise UsageError(f"{where}: cannot read {line.strip()!r}; expected {expected}; lists with a start offset "
                                 "or several labels per line are not supported")
            folder = _resolve(cfg, fields[0])
            label = _check_label(cfg, int(fields[2]), where)
            records.append(VideoRecord(folder, label, FrameFiles(folder, int(fields[1]), _frames_fps(cfg), template, start)))
    return records


def _split_folder(root: str, name: str) -> str:
    """Where a dataset's official split files are: the folder its archive unpacks to, else root itself."""
    return os.path.join(root, name) if os.path.isdir(os.path.join(root, name)) else root


def _lines(path: str):
    """(file:line, fields) of the non-empty lines (the official lists have CRLF endings)."""
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if line.split():
                yield f"{path}:{number}", line.split()


def _ucf101_classes(root: str) -> list[str]:
    path = os.path.join(_split_folder(root, UCF101_SPLITS), "classInd.txt")
    if not os.path.isfile(path):
        raise UsageError(f"the ucf101 layout needs '{path}' ({UCF101_SPLITS}/ from UCF101TrainTestSplits-RecognitionTask.zip)")
    names = []
    for where, fields in _lines(path):
        if len(fields) != 2 or fields[0] != str(len(names) + 1):
            raise UsageError(f"{where}: expected '<index> <class name>' with indices 1, 2, ... in order, got {' '.join(fields)!r}")
        names.append(fields[1])
    return names


def _ucf101_records(cfg: CfgNode, split: str) -> list[VideoRecord]:
    root = cfg.DATA.PATH_TO_DATA_DIR
    names = _ucf101_classes(root)
    index = {name.lower(): k for k, name in enumerate(names)}  # the lists spell a few classes in another case
    # UCF101 has no validation split: val and test both read the test list
    list_file = os.path.join(_split_folder(root, UCF101_SPLITS), f"{'train' if split == 'train' else 'test'}list0{cfg.DATA.SPLIT_ID}.txt")
    if not os.path.isfile(list_file):
        raise UsageError(f"the ucf101 layout needs '{list_file}' (DATA.SPLIT_ID {cfg.DATA.SPLIT_ID}, from {UCF101_SPLITS}/)")
    records = []
    for where, fields in _lines(list_file):
        class_name = fields[0].replace("\\", "/").split("/")[0]
        label = index.get(class_name.lower())
        if len(fields) not in (1, 2) or label is None or (len(fields) == 2 and fields[1] != str(label + 1)):
            raise UsageError(f"{where}: cannot read {' '.join(fields)!r}; expected '<Class>/<video>.avi' (and in a train list "
                             "the class's 1-based index), with <Class> one of classInd.txt's names")
        records.append(VideoRecord(_resolve(cfg, fields[0]), _check_label(cfg, label, where)))
    return records


def _hmdb51_split_files(cfg: CfgNode) -> dict[str, str]:
    """{class name: its split file} for DATA.SPLIT_ID, classes in sorted order."""
    folder = _split_folder(cfg.DATA.PATH_TO_DATA_DIR, HMDB51_SPLITS)
    suffix = f"_test_split{cfg.DATA.SPLIT_ID}.txt"
    files = {name[: -len(suffix)]: os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.endswith(suffix)}
    if not files:
        raise UsageError(f"the hmdb51 layout needs '<class>{suffix}' files in '{folder}' (DATA.SPLIT_ID {cfg.DATA.SPLIT_ID}; "
                         f"{HMDB51_SPLITS}/ from the HMDB51 split archive)")
    return files


def _hmdb51_records(cfg: CfgNode, split: str) -> list[VideoRecord]:
    wanted = "1" if split == "train" else "2"  # 1 = train, 2 = test, 0 = unused; val reads the test videos
    records = []
    for label, (name, split_file) in enumerate(_hmdb51_split_files(cfg).items()):
        for where, fields in _lines(split_file):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise UsageError(f"{where}: cannot read {' '.join(fields)!r}; expected '<video>.avi 0|1|2'")
            if fields[1] == wanted:
                records.append(VideoRecord(_resolve(cfg, os.path.join(name, fields[0])), _check_label(cfg, label, where)))
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
    if root and dataset in ("ssv2", "framelist") and os.path.isfile(os.path.join(root, SSV2_LABELS)):
        labels = _load_json(os.path.join(root, SSV2_LABELS))
        yield [name for name, _ in sorted(labels.items(), key=lambda item: int(item[1]))]
    if root and dataset == "ucf101" and os.path.isfile(os.path.join(_split_folder(root, UCF101_SPLITS), "classInd.txt")):
        yield _ucf101_classes(root)
    if root and dataset == "hmdb51" and os.path.isdir(root):
        try:
            classes = list(_hmdb51_split_files(cfg))
        except UsageError:
            classes = None
        yield classes
    if root and dataset in ("folder", "imagefolder"):
        for split in ("train", "val"):
            if os.path.isdir(os.path.join(root, split)):
                yield _class_folders(os.path.join(root, split))
                break
    shipped = _SHIPPED.get(("kinetics" if dataset == "synthetic" else dataset, cfg.MODEL.NUM_CLASSES))
    if shipped:
        yield _read_names(str(resources.files("vidformer.data").joinpath("labels", shipped)))
