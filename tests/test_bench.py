"""`vidformer bench --quick` end to end on tiny shapes: the JSON holds every figure, with sane values.

No test asserts a time: the timings of a shared CI machine mean nothing, only their presence and sign.
"""

import json
import math

import pytest
import torch

from vidformer.cli import main
from vidformer.engine.bench import BenchSettings, build_pair, make_step, matmul_rate, parity, run_bench, torchvision_mvit
from vidformer.models import create_model


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_torchvision_reference_holds_the_same_model():
    torch.manual_seed(0)
    model = create_model("mvitv2_s", num_classes=7, num_frames=4, img_size=32, depths=(1, 1), embed_dim=16)
    ref, name = torchvision_mvit(model, 4, 32)
    assert "torchvision" in name
    from vidformer import load_pretrained

    load_pretrained(model, ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 4, 32, 32)
    model.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name, peer", [("poolformer_s12", "timm"), ("cvt_13", "transformers")])
def test_image_runs_take_the_installed_peer_with_the_same_weights(name, peer):
    pytest.importorskip(peer)
    s = BenchSettings(models=(name,), frames=1, img_size=32, num_classes=5)
    pair = build_pair(name, s)
    assert pair.ref is not pair.ours and pair.ref_name.startswith(peer)
    assert parity(pair, torch.randn(2, 3, 32, 32)) < 1e-5


def test_train_step_leaves_no_gradients_and_forward_step_sets_eval():
    model = create_model("mvitv2_s", num_classes=3, num_frames=4, img_size=32, depths=(1, 1), embed_dim=16)
    x = torch.randn(1, 3, 4, 32, 32)
    make_step(model, x, "train", "bf16")()
    assert model.training and all(p.grad is None for p in model.parameters())
    make_step(model, x, "forward", "fp32")()
    assert not model.training


def test_matmul_rate_units():
    rate = matmul_rate("fp32", 256, torch.device("cpu"), iters=2)
    assert rate["n"] == 256 and _positive(rate["gmacs_per_s"])
    assert rate["gflops_per_s"] == pytest.approx(2 * rate["gmacs_per_s"])
    assert rate["gmacs_per_s"] == pytest.approx(256 ** 3 / rate["seconds"] / 1e9)


def test_cli_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--models", "poolformer_s12", "--dtypes", "fp32", "--threads", "1",
                 "--no-memory", "--no-data", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["settings"]["frames"] == 4 and result["settings"]["img_size"] == 32
    assert result["machine"]["threads"] == 1 and result["machine"]["torch"] == torch.__version__
    (model,) = result["models"]
    assert model["input"] == [1, 3, 4, 32, 32] and "MATH" in model["reference"]
    assert [(r["mode"], r["dtype"]) for r in model["results"]] == [("forward", "fp32"), ("train", "fp32")]
    assert "peak_mem_mb" not in model["results"][0]["ours"]
    assert result["data"] == {"skipped": "--no-data"}
    table = capsys.readouterr().out
    assert "poolformer_s12" in table and "speedup" in table


def test_cli_rejects_unknown_model(capsys):
    assert main(["bench", "--quick", "--models", "no_such_model", "--no-data"]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert main(["bench", "--quick", "--models", "poolformr_s12", "--no-data"]) == 2
    assert "did you mean poolformer_s12?" in capsys.readouterr().err


def test_cli_rejects_a_mode_the_compile_backend_does_not_take(capsys):
    argv = ["bench", "--quick", "--no-data", "--compile", "--compile-backend", "aot_eager", "--compile-mode", "max-autotune"]
    assert main(argv) == 2
    assert "--compile-mode 'max-autotune' is a mode of the inductor backend" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_bench_times_the_compile_apart(tmp_path):
    s = BenchSettings.quick_settings(models=("poolformer_s12",), modes=("forward",), dtypes=("fp32",), threads=1, memory=False,
                                     data=False, compile=True, compile_backend="eager")
    (model,) = run_bench(s, log=lambda msg: None)["models"]
    for row in model["results"]:
        for side in ("ours", "reference"):
            assert _positive(row[side]["first_call_s"]) and row[side]["compile_s"] == pytest.approx(
                row[side]["first_call_s"] - row[side]["seconds"])


@pytest.mark.slow
def test_quick_bench_measures_mvitv2_against_torchvision_with_memory_and_data():
    s = BenchSettings.quick_settings(models=("mvitv2_s",), dtypes=("fp32", "bf16"), modes=("train",), threads=1)
    result = run_bench(s, log=lambda msg: None)
    assert result["matmul"]["fp32"]["n"] == 256 and _positive(result["matmul"]["bf16"]["gmacs_per_s"])
    assert "VmHWM" in result["memory_method"]
    (model,) = result["models"]
    assert model["reference"].startswith("torchvision") and model["parity_rel_diff"] < 1e-3
    assert 0.001 < model["gflops_per_clip"] < 0.1  # the tiny model: about 2 MFLOPs per 4x32x32 clip
    # the FLOP rate uses torchvision's count; vidformer's own count of the same arithmetic is within a few per cent
    assert model["gflops_computed"] == pytest.approx(model["gflops_per_clip"], rel=0.1)
    for row in model["results"]:
        for side in ("ours", "reference"):
            fig = row[side]
            assert _positive(fig["seconds"]) and fig["clips_per_s"] == pytest.approx(1 / fig["seconds"])
            # forward+backward = 3 forwards' FLOPs over the matmul rate of the same dtype
            expected = 3 * model["gflops_per_clip"] * fig["clips_per_s"] / result["matmul"][row["dtype"]]["gmacs_per_s"]
            assert fig["matmul_fraction"] == pytest.approx(expected)
            # a training step of even a tiny model allocates activations and gradients: well above 0, below 1 GB
            assert 0.1 < fig["peak_mem_mb"] < 1024
        assert row["speedup"] == pytest.approx(row["reference"]["seconds"] / row["ours"]["seconds"])
        assert row["memory_ratio"] == pytest.approx(row["ours"]["peak_mem_mb"] / row["reference"]["peak_mem_mb"])
    data = result["data"]
    # the data pipeline's own benchmark, per decoder backend: clips/s per worker, seconds per multi-view video
    assert "skipped" in data or (all(_positive(r["clips_per_s"]) for r in data["train"].values())
                                 and all(_positive(r["one_decode_s"]) for r in data["multiview"].values()))


def test_cli_shapes_run_every_model_at_each_shape(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--models", "poolformer_s12", "--shapes", "2x32", "4x32x2", "--modes", "forward",
                 "--dtypes", "fp32", "--threads", "1", "--no-memory", "--no-data", "--json", str(out)])
    assert code == 0
    models = json.loads(out.read_text())["models"]
    assert [m["input"] for m in models] == [[1, 3, 2, 32, 32], [2, 3, 4, 32, 32]]
    table = capsys.readouterr().out
    assert "2x32x1" in table and "4x32x2" in table and table.count("references:") == 1
    assert main(["bench", "--quick", "--shapes", "16x", "--no-data"]) == 2
    assert "'16x' is not FRAMESxCROP" in capsys.readouterr().err
