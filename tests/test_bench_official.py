"""tools/bench_official.py without the official repositories: what it says when a path is not a checkout."""

import importlib.util
import os

import pytest

TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_official.py")


@pytest.fixture(scope="module")
def bench_official():
    spec = importlib.util.spec_from_file_location("bench_official", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_folder_that_is_not_the_uniformer_repo_is_named_with_the_file_expected(bench_official, tmp_path, capsys):
    assert bench_official(["--uniformer-repo", str(tmp_path)]) == 2
    err = _error_line(capsys)
    assert str(tmp_path) in err and "video_classification/slowfast/models/uniformer.py" in err
    assert "Sense-X/UniFormer" in err


def test_a_dvt_checkout_without_its_timm_copy_is_refused(bench_official, tmp_path, capsys):
    (tmp_path / "models_deit.py").write_text("")
    assert bench_official(["--dvt-repo", str(tmp_path)]) == 2
    err = _error_line(capsys)
    assert str(tmp_path) in err and "timm/models/vision_transformer.py" in err


def test_without_any_checkout_it_says_which_flags_name_one(bench_official, capsys):
    assert bench_official([]) == 2
    assert "--uniformer-repo" in _error_line(capsys)
