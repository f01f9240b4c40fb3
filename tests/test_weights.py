"""ImageNet weights: the cache, downloads from a local server (no internet), the offline error, the
`mgkit weights` commands, and `mgkit train --pretrained` recording the file it started from."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from mgkit import weights as W
from mgkit.artifacts import file_sha256
from mgkit.cli import app
from mgkit.errors import MgkitError, UsageError

runner = CliRunner()
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under a temporary TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # so get_dir() follows TORCH_HOME
    return tmp_path / "torch" / "hub" / "checkpoints"


def _point(monkeypatch: pytest.MonkeyPatch, model: str, url: str, filename: str | None = None,
           hashed: bool = True) -> W.WeightsFile:
    """Point `model`'s weights entry at `url` (its file name and hash prefix as the real entry's unless given)."""
    old = W.WEIGHTS[model]
    name = filename or old.filename
    entry = dataclasses.replace(old, url=url, filename=name, hash_prefix=W._hash_of(name) if hashed else None)
    monkeypatch.setitem(W.WEIGHTS, model, entry)
    return entry


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder: (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _state_file(path: Path, seed: int = 0) -> str:
    """A random ImageNet-shaped resnet18 state dict at `path`; returns its sha256."""
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_entry_names_a_registered_model_and_a_hash_where_the_name_carries_one() -> None:
    from mgkit.models import MODEL_NAMES

    assert set(W.WEIGHTS) <= set(MODEL_NAMES)
    assert W.WEIGHTS["resnet50"].hash_prefix == "0676ba61"
    assert W.WEIGHTS["bcos-resnet50"].filename == "resnet_50-f46c1a4159.pth"  # the reference's file
    assert W.WEIGHTS["bcos-resnet50"].hash_prefix == "f46c1a4159"
    assert W.WEIGHTS["xdnn-resnet50"].hash_prefix is None  # no hash published
    assert W.WEIGHTS["resnet50"].resolved_url() == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url


def test_offline_fails_in_one_line_naming_url_and_cache_path_fast(cache: Path, monkeypatch) -> None:
    entry = _point(monkeypatch, "resnet18", f"{CLOSED}/resnet18-f37072fd.pth")
    start = time.monotonic()
    with pytest.raises(MgkitError) as err:
        W.ensure("resnet18", quiet=True)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "\n" not in msg and entry.url in msg and str(cache / entry.filename) in msg
    assert not cache.exists() or not any(cache.iterdir())


def test_connect_timeout_bounds_an_unanswering_host(cache: Path, monkeypatch) -> None:
    # a listening socket that never accepts: the connection or the first read waits for the timeout
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    try:
        _point(monkeypatch, "resnet18", f"http://127.0.0.1:{sock.getsockname()[1]}/resnet18-f37072fd.pth")
        start = time.monotonic()
        with pytest.raises(MgkitError, match="cannot download ImageNet weights for resnet18"):
            W.ensure("resnet18", quiet=True, timeout=0.5)
        assert time.monotonic() - start < 5
    finally:
        sock.close()


def test_download_checks_the_hash_and_loads(cache: Path, server, monkeypatch) -> None:
    base, served = server
    digest = _state_file(served / "upload.pth")
    name = f"resnet18-{digest[:8]}.pth"
    (served / "upload.pth").rename(served / name)
    _point(monkeypatch, "resnet18", f"{base}/{name}", filename=name)
    path = W.ensure("resnet18", quiet=True)
    assert path == cache / name and file_sha256(path) == digest
    assert W.ensure("resnet18", quiet=True) == path  # cached: no second download (server could be gone)

    from mgkit.models import create_model

    model = create_model("resnet18", 3, pretrained=True)
    torch.testing.assert_close(model.net.layer2[0].conv1.weight, torch.load(path)["layer2.0.conv1.weight"])


def test_download_with_a_wrong_hash_leaves_nothing(cache: Path, server, monkeypatch) -> None:
    base, served = server
    digest = _state_file(served / "file.pth")
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    (served / "file.pth").rename(served / f"resnet18-{wrong}.pth")
    _point(monkeypatch, "resnet18", f"{base}/resnet18-{wrong}.pth", filename=f"resnet18-{wrong}.pth")
    with pytest.raises(MgkitError, match=f"does not start with {wrong}"):
        W.ensure("resnet18", quiet=True)
    assert not any(cache.iterdir())


def test_http_error_is_one_line(cache: Path, server, monkeypatch) -> None:
    base, _ = server
    _point(monkeypatch, "xdnn-resnet50", f"{base}/absent.pth.tar", hashed=False)
    with pytest.raises(MgkitError, match=r"HTTP 404.*xfixup_resnet50_model_best\.pth\.tar"):
        W.ensure("xdnn-resnet50", quiet=True)


def test_weights_commands(cache: Path, server, monkeypatch) -> None:
    base, served = server
    digest = _state_file(served / "x.pth.tar")
    _point(monkeypatch, "xdnn-resnet50", f"{base}/x.pth.tar", hashed=False)
    r = runner.invoke(app, ["weights", "list", "--json"])
    rows = {row["model"]: row for row in json.loads(r.stdout)["weights"]}
    assert r.exit_code == 0 and not rows["xdnn-resnet50"]["cached"]
    assert rows["resnet50"]["path"] == str(cache / "resnet50-0676ba61.pth")

    r = runner.invoke(app, ["weights", "download", "xdnn-resnet50", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    assert file_sha256(cache / "xfixup_resnet50_model_best.pth.tar") == digest
    r = runner.invoke(app, ["weights", "list", "--json"])
    assert {row["model"]: row for row in json.loads(r.stdout)["weights"]}["xdnn-resnet50"]["cached"]

    for args, code, words in ((["download"], 2, "--all"), (["download", "resnet18", "--all"], 2, "not both"),
                              (["download", "xdnn-resnet18"], 2, "xdnn-resnet18")):
        r = runner.invoke(app, ["weights", *args])
        assert r.exit_code == code and words in r.output and r.output.count("\n") == 1, r.output


def test_describe_refuses_unknown_models() -> None:
    with pytest.raises(UsageError, match="no ImageNet weights are known for nope"):
        W.describe(["nope"])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, one_thread) -> Path:
    from mgkit.data.prepare import run_prepare
    from mgkit.data.sources import synthetic

    data = tmp_path_factory.mktemp("weights") / "tiny.h5"
    plan = synthetic.plan(task="multilabel", num_classes=3, n_train=8, n_val=8, n_test=8, seed=0)
    run_prepare(plan, data, size=32, bbox_frac=1.0, seed=0, quiet=True)
    return data


FAST = ["--epochs", "1", "--batch-size", "8", "--eval-batch-size", "8", "--workers", "0", "--device", "cpu",
        "--quiet"]


def test_train_pretrained_offline_with_empty_cache_fails_in_one_line(cache: Path, tiny_data: Path, tmp_path,
                                                                      monkeypatch) -> None:
    _point(monkeypatch, "resnet18", f"{CLOSED}/resnet18-f37072fd.pth")
    start = time.monotonic()
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--model",
                            "resnet18", "--pretrained", *FAST])
    assert time.monotonic() - start < 10
    assert r.exit_code == 1 and r.output.startswith("error: cannot download") and r.output.count("\n") == 1
    assert str(cache / "resnet18-f37072fd.pth") in r.output and CLOSED in r.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_pretrained_loads_the_cached_file_and_records_its_hash(cache: Path, tiny_data: Path, tmp_path,
                                                                      monkeypatch) -> None:
    _point(monkeypatch, "resnet18", f"{CLOSED}/resnet18-f37072fd.pth")  # a download would fail
    cache.mkdir(parents=True)
    digest = _state_file(cache / "resnet18-f37072fd.pth", seed=3)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(out), "--model", "resnet18",
                            "--pretrained", "--lr", "1e-12", *FAST])
    assert r.exit_code == 0, r.output
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["start_weights"] == {"file": str(cache / "resnet18-f37072fd.pth"), "sha256": digest}
    # lr 1e-12: Adam moves each weight by about 1e-12, so the trained body is the ImageNet file's
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    imagenet = torch.load(cache / "resnet18-f37072fd.pth")
    torch.testing.assert_close(ckpt["model"]["layer4.1.conv2.weight"], imagenet["layer4.1.conv2.weight"])
