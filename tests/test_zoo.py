"""The model zoo and remote checkpoints, against a loopback HTTP server (127.0.0.1; no test reaches the
internet): download once, cache hit with the server gone, hash mismatch, truncated body, no server,
zoo names (`zoo:NAME`, dataset tags) in the Python API and in TEST.CHECKPOINT_FILE_PATH; the pytorchvideo
baselines and their layout; and the zoo table itself (entries, configs, README)."""

import hashlib
import io
import os
import re
import socket
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import vidformer
from tests.toy import ToyVideo
from vidformer.checkpoint import load_pretrained, zoo
from vidformer.checkpoint.remote import cache_dir, cache_path, url_cache_path
from vidformer.cli import main
from vidformer.config import get_cfg
from vidformer.engine.evaluator import checkpoint_to_test
from vidformer.engine.recognizer import load_model
from vidformer.errors import DownloadError, UsageError
from vidformer.models import VideoModel
from vidformer.models.registry import _BUILDERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Files(BaseHTTPRequestHandler):
    """Serves server.files[path]; paths in server.truncated send half the body under the full Content-Length."""

    def do_GET(self):
        body = self.server.files.get(self.path)
        self.server.hits.append(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.server.truncated else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.files, httpd.truncated, httpd.hits = {}, set(), []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDFORMER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _toy_file(seed=0) -> tuple[bytes, dict]:
    torch.manual_seed(seed)
    state = ToyVideo().state_dict()
    buf = io.BytesIO()
    torch.save({"model_state": state}, buf)
    return buf.getvalue(), state


def _files_in(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def _test_entry(monkeypatch, server, **fields) -> zoo.PretrainedEntry:
    """A zoo entry for the tiny toy model served by the loopback server (the zoo table patched for this test)."""
    monkeypatch.setitem(zoo.DATASETS, "toy", ("Toy", 5))
    entry = zoo.PretrainedEntry("toy_video.toy_4x2", "toy", 4, 2, 32, "native", 50.0, "1 x 1", "",
                                url=f"{server.url}/toy.pth", source="test")
    entry = replace(entry, **fields)
    monkeypatch.setattr(zoo, "ZOO", zoo.ZOO + (entry,))
    monkeypatch.setattr(zoo, "_BY_NAME", dict(zoo._BY_NAME, **{entry.name: entry}))
    return entry


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.pth"


# -- downloads and the cache ----------------------------------------------------------------------


def test_url_downloads_once_then_loads_offline(server, cache):
    body, state = _toy_file()
    server.files["/ckpt/toy.pth"] = body
    url = server.url + "/ckpt/toy.pth"
    model = ToyVideo()
    report = load_pretrained(model, url, strict=True)
    assert report.layout == "native" and len(report.loaded) == len(state)
    assert torch.equal(model.head.weight, state["head.weight"])
    assert os.path.isfile(url_cache_path(url)) and _files_in(cache) == [os.path.relpath(url_cache_path(url), cache)]
    server.shutdown()
    server.server_close()  # offline from here on: the cached file is used without the network
    again = ToyVideo()
    load_pretrained(again, url, strict=True)
    assert torch.equal(again.head.weight, state["head.weight"]) and server.hits == ["/ckpt/toy.pth"]


def test_hash_mismatch_leaves_nothing_in_the_cache(server, monkeypatch, cache):
    server.files["/toy.pth"], _ = _toy_file()
    entry = _test_entry(monkeypatch, server, sha256="0" * 64)
    with pytest.raises(DownloadError) as err:
        load_pretrained(ToyVideo(), "zoo:toy_video.toy_4x2")
    message = str(err.value)
    assert "sha256" in message and entry.url in message and cache_path(entry) in message and "\n" not in message
    assert _files_in(cache) == []


def test_hash_prefix_in_the_file_name_is_checked(server, cache):
    body, _ = _toy_file()
    server.files["/toy-deadbeef.pth"] = body  # torch.hub's name-<sha256 prefix>.ext, and the prefix is wrong
    with pytest.raises(DownloadError, match="sha256"):
        load_pretrained(ToyVideo(), server.url + "/toy-deadbeef.pth")
    good = hashlib.sha256(body).hexdigest()[:8]
    server.files[f"/toy-{good}.pth"] = body
    assert load_pretrained(ToyVideo(), f"{server.url}/toy-{good}.pth").layout == "native"


def test_truncated_body_is_not_trusted_and_the_next_call_downloads_again(server, monkeypatch, cache):
    body, state = _toy_file()
    server.files["/toy.pth"] = body
    server.truncated.add("/toy.pth")  # the server closes after half of Content-Length; urllib does not mind
    entry = _test_entry(monkeypatch, server)
    with pytest.raises(DownloadError, match="truncated") as err:
        load_pretrained(ToyVideo(), "zoo:toy_video.toy_4x2")
    assert cache_path(entry) in str(err.value) and _files_in(cache) == []
    server.truncated.clear()
    model = ToyVideo()
    load_pretrained(model, "zoo:toy_video.toy_4x2", strict=True)
    assert torch.equal(model.head.weight, state["head.weight"]) and len(server.hits) == 2


def test_no_server_at_first_fetch_says_the_url_and_where_to_put_the_file(cache):
    url = _closed_port_url()
    with pytest.raises(DownloadError) as err:
        load_pretrained(ToyVideo(), url)
    message = str(err.value)
    assert url in message and url_cache_path(url) in message and "\n" not in message
    assert _files_in(cache) == []
    # at the command line it is one line and exit code 2, not a traceback
    assert main(["convert", url, str(cache / "out.pth"), "--model", "toy_video"]) == 2


def test_browser_only_entry_explains_how_to_place_the_file(server, monkeypatch, cache):
    body, state = _toy_file()
    entry = _test_entry(monkeypatch, server, url="", page="https://drive.example/file/abc/view",
                        filename="toy_by_hand.pth")
    with pytest.raises(DownloadError) as err:
        load_pretrained(ToyVideo(), "zoo:toy_video.toy_4x2")
    assert entry.page in str(err.value) and cache_path(entry) in str(err.value)
    os.makedirs(cache_dir(), exist_ok=True)
    with open(cache_path(entry), "wb") as f:  # what the user does by hand
        f.write(body)
    model = ToyVideo()
    load_pretrained(model, "zoo:toy_video.toy_4x2", strict=True)
    assert torch.equal(model.head.weight, state["head.weight"]) and server.hits == []


# -- zoo names in the API and in configs -----------------------------------------------------------


def test_create_model_takes_a_dataset_tag_or_a_zoo_name(server, monkeypatch, capsys):
    body, state = _toy_file()
    server.files["/toy.pth"] = body
    _test_entry(monkeypatch, server)
    model = vidformer.create_model("toy_video", pretrained="toy")
    assert model.num_classes == 5 and torch.equal(model.head.weight, state["head.weight"])
    assert model.pretrained_cfg.source == "zoo:toy_video.toy_4x2" and model.pretrained_cfg.sampling_rate == 2
    assert "toy_video.toy_4x2" in capsys.readouterr().out  # the load report names the entry
    same = vidformer.create_model("toy_video", pretrained="toy_video.toy_4x2")
    assert torch.equal(same.head.weight, state["head.weight"]) and server.hits == ["/toy.pth"]
    with pytest.raises(UsageError, match="no published checkpoint of toy_video matches"):
        vidformer.create_model("toy_video", pretrained="ssv2")
    with pytest.raises(UsageError, match="is a checkpoint of mvitv2_s"):
        vidformer.create_model("toy_video", pretrained="mvitv2_s.k400_16x4")
    with pytest.raises(UsageError, match="did you mean mvitv2_s.k400_16x4"):
        load_pretrained(ToyVideo(), "zoo:mvitv2_s.k400_16x3")


def test_zoo_name_in_test_checkpoint_file_path(server, monkeypatch, tmp_path):
    body, state = _toy_file()
    server.files["/toy.pth"] = body
    _test_entry(monkeypatch, server)
    cfg = get_cfg(None, ["OUTPUT_DIR", str(tmp_path / "out"), "MODEL.MODEL_NAME", "toy_video", "MODEL.NUM_CLASSES", "5", "DATA.NUM_FRAMES", "4",
                         "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32",
                         "TEST.CHECKPOINT_FILE_PATH", "zoo:toy_video.toy_4x2"])
    assert checkpoint_to_test(cfg) == "zoo:toy_video.toy_4x2"  # what `vidformer test` loads
    model, _ = load_model(cfg, checkpoint_to_test(cfg))  # what `vidformer demo --config` builds and loads
    assert torch.equal(model.head.weight, state["head.weight"]) and server.hits == ["/toy.pth"]
    assert model.pretrained_cfg.source == "zoo:toy_video.toy_4x2"


def test_a_recognizer_by_zoo_name_takes_its_geometry_from_the_entry(server, monkeypatch):
    body, state = _toy_file()
    server.files["/toy.pth"] = body
    _test_entry(monkeypatch, server)
    recognizer = vidformer.load_recognizer("zoo:toy_video.toy_4x2", "cpu")
    assert (recognizer.cfg.MODEL.MODEL_NAME, recognizer.cfg.MODEL.NUM_CLASSES, recognizer.cfg.DATA.NUM_FRAMES) == ("toy_video", 5, 4)
    assert torch.equal(recognizer.model.head.weight, state["head.weight"])
    top = recognizer.predict(torch.zeros(3, 4, 32, 32), topk=2)
    assert len(top) == 2 and top[0][1] >= top[1][1]


def test_configs_point_at_zoo_entries_of_their_model():
    pointed = 0
    for path in _configs():
        cfg = get_cfg(path)
        for key in ("TRAIN", "TEST"):
            source = cfg[key].CHECKPOINT_FILE_PATH
            if source.startswith("zoo:"):
                entry = zoo.get_entry(source)
                assert entry.model == cfg.MODEL.MODEL_NAME, f"{path}: {key}.CHECKPOINT_FILE_PATH {source}"
                pointed += 1
    assert pointed >= 16


# -- the zoo table ---------------------------------------------------------------------------------


def _configs():
    import glob

    return sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def _layouts_of(model_name: str) -> set[str]:
    """The layout names the loader knows for a registered model, read from its family module's classes
    (no model is built: some zoo models have 200 M parameters)."""
    module = sys.modules[_BUILDERS[model_name].__module__]
    classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, VideoModel)]
    return {"native"} | {layout.name for c in classes for layout in c.checkpoint_layouts}


@pytest.mark.parametrize("entry", zoo.ZOO, ids=[e.name for e in zoo.ZOO])
def test_every_zoo_entry_loads_into_a_registered_model(entry):
    assert entry.model in vidformer.list_models(), entry.name
    assert entry.layout in _layouts_of(entry.model)
    assert entry.url.startswith("https://") or entry.page.startswith("https://")
    assert entry.cache_name and "/" not in entry.cache_name and re.fullmatch(r"[0-9a-f]*", entry.sha256)
    assert re.fullmatch(r"[a-z0-9_/]+\.[a-z0-9]+(_[a-z0-9]+)*", entry.name)
    if entry.config:
        cfg = get_cfg(os.path.join(ROOT, entry.config))
        assert cfg.MODEL.MODEL_NAME == entry.model and cfg.MODEL.NUM_CLASSES == entry.num_classes
        assert cfg.DATA.NUM_FRAMES == entry.num_frames and cfg.DATA.TEST_CROP_SIZE == entry.crop_size


@pytest.mark.slow  # imports pytorchvideo's hub and timm's cfgs
def test_zoo_urls_agree_with_the_installed_libraries():
    from pytorchvideo.models.hub import csn, r2plus1d, resnet, slowfast, vision_transformers, x3d
    from timm.models import get_pretrained_cfg
    from torchvision.models.video import MViT_V2_S_Weights

    assert zoo.get_entry("mvitv2_s.k400_16x4_tv").url == MViT_V2_S_Weights.KINETICS400_V1.url
    hub_urls = {}
    for module in (csn, r2plus1d, resnet, slowfast, vision_transformers, x3d):
        hub_urls.update(module.checkpoint_paths)
    for entry in zoo.list_pretrained("pytorchvideo/*"):
        assert entry.url == hub_urls[entry.model.split("/")[1]], entry.name
    for entry in zoo.list_pretrained("*_timm"):
        hub_id = entry.cache_name.removesuffix(".safetensors")
        assert get_pretrained_cfg(hub_id).hf_hub_id == f"timm/{hub_id}"


def test_list_pretrained_and_the_models_verb(capsys):
    names = [e.name for e in vidformer.list_pretrained("mvitv2_s")]
    assert names == ["mvitv2_s.k400_16x4", "mvitv2_s.ssv2_16x4", "mvitv2_s.k400_16x4_tv", "mvitv2_s.in1k",
                     "mvitv2_s.in1k_timm"]
    assert main(["models", "--pretrained", "*.ssv2*"]) == 0
    out = capsys.readouterr().out
    assert "mvitv2_b.ssv2_32x3" in out and "70.5 (1 x 3)" in out and "mvitv2_s.k400_16x4 " not in out
    assert main(["models", "pytorchvideo/x3d_*"]) == 0
    assert capsys.readouterr().out.split() == ["pytorchvideo/x3d_l", "pytorchvideo/x3d_m", "pytorchvideo/x3d_s",
                                               "pytorchvideo/x3d_xs"]
    assert main(["models", "--pretrained", "nothing*"]) == 2


def test_readme_model_zoo_table_is_the_rendered_zoo():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme.split("\n## Model zoo\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table == zoo.render_markdown().splitlines(), "README 'Model zoo' table: paste zoo.render_markdown()"


# -- pytorchvideo baselines ------------------------------------------------------------------------


@pytest.mark.slow  # imports pytorchvideo (its first import), builds two X3D-XS
def test_pytorchvideo_x3d_checkpoint_loads_and_gives_the_hub_models_logits(server):
    from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(0)
    hub = create_x3d(input_clip_length=4, input_crop_size=32, model_num_class=7).eval()  # softmax head
    buf = io.BytesIO()
    torch.save({"model_state": hub.state_dict()}, buf)  # what the hub's Kinetics files hold
    server.files["/X3D_XS.pyth"] = buf.getvalue()
    ours = vidformer.create_model("pytorchvideo/x3d_xs", num_classes=7, num_frames=4, img_size=32).eval()
    report = load_pretrained(ours, server.url + "/X3D_XS.pyth", strict=True)
    assert report.layout == "pytorchvideo"
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        logits = ours(x)
        assert torch.allclose(logits.softmax(-1), hub(x), atol=1e-6)  # ours: logits, not the hub's softmax
        assert ours.forward_head(ours.forward_features(x), pre_logits=True).shape == (2, 2048)
    ours.reset_classifier(3)
    assert ours(x).shape == (2, 3)


@pytest.mark.slow
def test_pytorchvideo_slowfast_cuts_its_pathways_from_one_clip():
    torch.manual_seed(0)
    model = vidformer.create_model("pytorchvideo/slowfast_r50", num_classes=5, num_frames=8, img_size=32).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    slow, fast = model.pathways(x)
    assert model.alpha == 4 and torch.equal(fast, x) and torch.equal(slow, x[:, :, [0, 7]])
    with torch.no_grad():
        assert model(x).shape == (1, 5)
        assert torch.allclose(model(x), model.net([slow, fast]), atol=1e-5)  # the hub net fed by hand
    model.train().set_grad_checkpointing(True)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
