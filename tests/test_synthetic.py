"""The synthetic dataset generator: real decodable videos, labels as written, motion decides the class."""

import filecmp
import json
import os

import av
import numpy as np
import pytest

from vidformer.data.synthetic import (
    frame_number_color,
    make_synthetic_dataset,
    read_frame_numbers,
    write_frame_number_video,
)


def _decode(path):
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _sprite_track(frames):
    """Centre of the brightest blob per frame (the sprite is brighter than the background)."""
    brightness = frames.astype(np.float64).mean(axis=3)
    return [np.argwhere(b >= np.percentile(b, 97)).mean(axis=0) for b in brightness]


def test_kinetics_layout_round_trip(tmp_path):
    root = make_synthetic_dataset(str(tmp_path), num_classes=4, train_per_class=3, val_per_class=2, num_frames=16, size=48)
    assert root == str(tmp_path)
    with open(tmp_path / "classes.txt") as f:
        assert f.read().splitlines() == ["moving right", "moving down", "moving left", "moving up"]
    for split, count in (("train", 12), ("val", 8), ("test", 8)):
        lines = (tmp_path / f"{split}.csv").read_text().splitlines()
        assert len(lines) == count
        for line in lines:
            rel, label = line.split(" ")
            assert not os.path.isabs(rel)
            frames = _decode(str(tmp_path / rel))
            assert frames.shape == (16, 48, 48, 3)
            assert rel.startswith(f"videos/{'val' if split == 'test' else split}/class{label}_")
    assert sorted(int(line.split()[1]) for line in (tmp_path / "val.csv").read_text().splitlines()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_class_is_the_direction_of_motion(tmp_path):
    make_synthetic_dataset(str(tmp_path), num_classes=4, train_per_class=2, val_per_class=0, num_frames=8, size=64)
    # class k moves at angle 90k degrees (image y axis points down): right, down, left, up
    expected = {0: (0, 1), 1: (1, 0), 2: (0, -1), 3: (-1, 0)}
    for line in (tmp_path / "train.csv").read_text().splitlines():
        rel, label = line.split()
        track = _sprite_track(_decode(str(tmp_path / rel)))
        # step between consecutive frames, wrapped into (-size/2, size/2]; median is robust to wrap frames
        steps = np.array([(b - a + 32) % 64 - 32 for a, b in zip(track, track[1:])])
        dy, dx = np.median(steps, axis=0)
        ey, ex = expected[int(label)]
        assert abs(dy - 12 * ey) < 3 and abs(dx - 12 * ex) < 3, (rel, dy, dx)


def test_single_frames_do_not_reveal_the_class(tmp_path):
    make_synthetic_dataset(str(tmp_path), num_classes=4, train_per_class=6, val_per_class=0, num_frames=8, size=64)
    first = {}
    for line in (tmp_path / "train.csv").read_text().splitlines():
        rel, label = line.split()
        first.setdefault(int(label), []).append(_sprite_track(_decode(str(tmp_path / rel)))[0])
    # start positions are random per video, so every class has sprites spread over the frame
    for label, positions in first.items():
        assert np.ptp(np.array(positions), axis=0).max() > 16, label


def test_deterministic_for_a_seed(tmp_path):
    a = make_synthetic_dataset(str(tmp_path / "a"), train_per_class=1, val_per_class=1, num_frames=8, size=32, seed=3)
    b = make_synthetic_dataset(str(tmp_path / "b"), train_per_class=1, val_per_class=1, num_frames=8, size=32, seed=3)
    c = make_synthetic_dataset(str(tmp_path / "c"), train_per_class=1, val_per_class=1, num_frames=8, size=32, seed=4)
    rel = "videos/train/class1_000.mp4"
    assert np.array_equal(_decode(os.path.join(a, rel)), _decode(os.path.join(b, rel)))
    assert not np.array_equal(_decode(os.path.join(a, rel)), _decode(os.path.join(c, rel)))
    assert filecmp.cmp(os.path.join(a, "train.csv"), os.path.join(b, "train.csv"), shallow=False)


def test_ssv2_and_folder_layouts(tmp_path):
    ssv2 = make_synthetic_dataset(str(tmp_path / "ssv2"), train_per_class=1, val_per_class=1, num_frames=8, size=32, layout="ssv2")
    with open(os.path.join(ssv2, "something-something-v2-labels.json")) as f:
        labels = json.load(f)
    with open(os.path.join(ssv2, "something-something-v2-validation.json")) as f:
        records = json.load(f)
    assert len(records) == 4
    for record in records:
        index = int(labels[record["template"].replace("[", "").replace("]", "")])
        assert _decode(os.path.join(ssv2, record["id"] + ".webm")).shape == (8, 32, 32, 3)
        assert record["id"] == str(200000 + 1000 * index)
    folder = make_synthetic_dataset(str(tmp_path / "folder"), train_per_class=2, val_per_class=1, num_frames=8, size=32, layout="folder")
    assert sorted(os.listdir(os.path.join(folder, "train"))) == ["moving_down", "moving_left", "moving_right", "moving_up"]
    assert len(os.listdir(os.path.join(folder, "val", "moving_up"))) == 1


def test_frame_number_video_round_trip(tmp_path):
    path = write_frame_number_video(str(tmp_path / "numbers.mp4"), 70, height=40, width=56)
    frames = _decode(path)
    assert frames.shape == (70, 40, 56, 3)
    assert read_frame_numbers(frames) == list(range(70))
    # a float (C, T, H, W) view normalised with mean/std decodes the same way
    mean, std = [0.45, 0.45, 0.45], [0.225, 0.225, 0.225]
    view = (frames[[3, 40, 69]].transpose(3, 0, 1, 2) / 255.0 - np.reshape(mean, (3, 1, 1, 1))) / np.reshape(std, (3, 1, 1, 1))
    assert read_frame_numbers(view.astype(np.float32), mean, std) == [3, 40, 69]
    assert frame_number_color(17) == (24, 24, 128)
    with pytest.raises(ValueError):
        frame_number_color(256)
