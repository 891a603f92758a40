"""tools/check_videos.py and tools/prepare_videos.py on synthetic videos."""

import importlib.util
import os

import numpy as np

from vidformer.data.maintenance import frame_stats
from vidformer.data.synthetic import write_video

TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _frames(n, height, width):
    return np.random.default_rng(0).integers(0, 256, (n, height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)


def test_check_videos_writes_a_clean_list(tmp_path):
    write_video(str(tmp_path / "good.mp4"), _frames(12, 32, 64))
    with open(tmp_path / "good.mp4", "rb") as f:
        (tmp_path / "cut.mp4").write_bytes(f.read()[:1500])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "list.csv").write_text("good.mp4 1\ncut.mp4 0\nempty.mp4 2\nmissing.mp4 3\n")
    assert _tool("check_videos")([str(tmp_path / "list.csv"), "--workers", "1"]) == 1
    assert (tmp_path / "list_clean.csv").read_text() == "good.mp4 1\n"
    failed = (tmp_path / "list_failed.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in failed] == [str(tmp_path / n) for n in ("cut.mp4", "empty.mp4", "missing.mp4")]
    assert failed[2].endswith("no such file")
    (tmp_path / "bad.csv").write_text("good.mp4 one\n")
    assert _tool("check_videos")([str(tmp_path / "bad.csv")]) == 2


def test_prepare_videos_resizes_sets_keyframes_and_resumes(tmp_path):
    src = tmp_path / "src"
    write_video(str(src / "a" / "wide.mp4"), _frames(40, 96, 160), gop=250)
    write_video(str(src / "tall.webm"), _frames(20, 128, 96), codec="libvpx-vp9")
    dst = tmp_path / "dst"
    prepare = _tool("prepare_videos")
    assert prepare([str(src), str(dst), "--short-side", "64", "--gop", "16", "--workers", "1"]) == 0
    assert frame_stats(str(dst / "a" / "wide.mp4")) == (40, 64, 106, [0, 16, 32])  # 160 * 64 / 96 = 106.7 -> even 106
    assert frame_stats(str(dst / "tall.webm"))[:3] == (20, 86, 64)  # VP9 .webm stays .webm; 128 * 64 / 96 -> 86
    before = os.path.getmtime(dst / "a" / "wide.mp4")
    assert prepare([str(src), str(dst), "--short-side", "64", "--workers", "1"]) == 0
    assert os.path.getmtime(dst / "a" / "wide.mp4") == before  # done files are skipped
    assert not [f for f in os.listdir(dst / "a") if "partial" in f]
