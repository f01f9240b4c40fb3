"""Model registry: construction, input transforms, guidance layers, B-cos layers, X-DNN, weights files."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from mgkit import xdnn
from mgkit.errors import FormatError, MgkitError, UsageError
from helpers import perturb_
from mgkit.models import FAMILIES, LAYERS, MODEL_NAMES, GuidedModel, create_model, family_of, load_weights

K = 3


pytestmark = pytest.mark.usefixtures("one_thread")




def _images(n: int = 2, size: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _layer_outputs(model: GuidedModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    outs: dict[str, torch.Tensor] = {}
    handles = [
        model.layer_module(layer).register_forward_hook(lambda m, i, o, layer=layer: outs.__setitem__(layer, o))
        for layer in LAYERS[1:]
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return outs


# ---------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_name_builds_with_k_class_head(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, K).eval()
    family = {"resnet": "vanilla", "bcos": "bcos", "xdnn": "xdnn"}[name.split("-")[0].rstrip("0123456789")]
    assert model.name == name and model.family.name == family and model.num_classes == K
    assert family_of(name) is model.family  # the record, without building a network
    x = model.prepare_input(_images())
    assert x.shape == (2, 6 if family == "bcos" else 3, 32, 32) and x.shape[1] == model.family.input_channels
    with torch.no_grad():
        assert model(x).shape == (2, K)
    assert ("bcos" in model.supported_attributions) == (family == "bcos")
    assert {"ixg", "gradcam", "intgrad"} <= set(model.supported_attributions)
    # stage widths of ResNet-18 (basic blocks) vs ResNet-50 (bottlenecks)
    widths = [64, 128, 256, 512] if name.endswith("18") else [256, 512, 1024, 2048]
    with torch.no_grad():
        outs = _layer_outputs(model, x)
    assert [outs[layer].shape[1] for layer in LAYERS[1:]] == widths


def test_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(UsageError, match="unknown model 'resnet101'"):
        create_model("resnet101", K)
    with pytest.raises(UsageError, match="num_classes"):
        create_model("resnet18", 0)
    model = create_model("resnet18", K)
    with pytest.raises(UsageError, match="unknown layer"):
        model.layer_module("layer3")
    with pytest.raises(UsageError, match=r"\[B, 3, H, W\]"):
        model.prepare_input(torch.rand(2, 6, 8, 8))


def test_prepare_input_semantics() -> None:
    images = _images()
    vanilla = create_model("resnet18", K)
    by_hand = torch.stack([(images[:, c] - m) / s for c, (m, s) in
                           enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))], dim=1)
    torch.testing.assert_close(vanilla.prepare_input(images), by_hand)
    torch.testing.assert_close(create_model("xdnn-resnet18", K).prepare_input(images), by_hand)

    bcos = create_model("bcos-resnet18", K)
    x = bcos.prepare_input(images)
    assert x.shape[1] == 6
    torch.testing.assert_close(x[:, :3], images)  # no mean/std for B-cos
    torch.testing.assert_close(x[:, 3:], 1 - images)
    # dtype follows the images (float64 tests)
    assert vanilla.prepare_input(images.double()).dtype == torch.float64


def test_layer_modules_and_shapes() -> None:
    model = create_model("resnet18", K)
    assert model.layer_module("input") is None
    for i, layer in enumerate(LAYERS[1:], start=1):
        assert model.layer_module(layer) is getattr(model.net, f"layer{i}")
    with torch.no_grad():
        outs = _layer_outputs(model.eval(), model.prepare_input(_images(size=64)))
    assert {k: tuple(v.shape[1:]) for k, v in outs.items()} == {
        "mid1": (64, 16, 16), "mid2": (128, 8, 8), "mid3": (256, 4, 4), "final": (512, 2, 2)}


def test_state_dict_is_the_networks_under_net_prefix() -> None:
    model = create_model("resnet18", K)
    keys = list(model.state_dict())
    assert all(k.startswith("net.") for k in keys)  # mean/std buffers are not persistent
    assert "net.fc.weight" in keys and model.state_dict()["net.fc.weight"].shape == (K, 512)


# ---------------------------------------------------------------------------------------------- B-cos
def _package_bcos_resnet18(model: GuidedModel) -> nn.Module:
    """The same weights in the bcos package's own layer classes."""
    import bcos.models.pretrained as bcos_pretrained
    from bcos.modules import BcosConv2d

    plain = bcos_pretrained.resnet18(pretrained=False)
    plain.fc = BcosConv2d(plain.fc.in_channels, model.num_classes)
    plain.num_classes = model.num_classes
    plain.load_state_dict(model.net.state_dict())
    return plain


def test_bcos_network_matches_package_layers() -> None:
    torch.manual_seed(0)
    model = create_model("bcos-resnet18", K)
    net = model.net
    assert type(net.fc).__name__ == "_BcosConv2d" and net.fc.b == 2 and net.fc.max_out == 1
    assert net.fc.linear.weight.shape == (K, 512, 1, 1)
    assert net.logit_layer.logit_bias == pytest.approx(-math.log(999))  # the reference's log(0.001/0.999)
    assert net.bn1.bias is None  # NoBias(BatchNormUncentered2d)
    plain = _package_bcos_resnet18(model).double()
    model.double()
    x = model.prepare_input(_images(dtype=torch.float64))
    for train in (True, False):
        model.train(train)
        plain.train(train)
        torch.testing.assert_close(model(x), plain(x), rtol=1e-10, atol=1e-10)
    # train-mode batches updated the running statistics identically
    torch.testing.assert_close(net.bn1.running_var, plain.bn1.running_var)


def test_bcos_explanation_mode_toggles_and_restores() -> None:
    model = create_model("bcos-resnet18", K)
    flags = lambda: {m.detach for m in model.net.modules() if hasattr(m, "set_explanation_mode")}  # noqa: E731
    assert flags() == {False}
    with model.explanation_mode():
        assert flags() == {True}
        with model.explanation_mode():
            assert flags() == {True}
        assert flags() == {True}  # nested exit keeps the outer context on
    assert flags() == {False}
    vanilla = create_model("resnet18", K)
    with vanilla.explanation_mode():  # a no-op for other families
        pass


# ---------------------------------------------------------------------------------------------- X-DNN
def test_xdnn_structure_is_bias_and_norm_free() -> None:
    net = xdnn.xdnn_resnet50()
    keys = list(net.state_dict())
    assert "layer1.0.downsample.weight" in keys and "layer4.2.conv3.weight" in keys and "fc.weight" in keys
    assert not [k for k in keys if "bias" in k or "bn" in k or "running" in k]
    assert not [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert len(keys) == 1 + 16 * 3 + 4 + 1  # stem, 16 bottlenecks, 4 projections, fc
    # Fixup: residual branches end in zero, the classifier starts at zero, the others do not
    with torch.no_grad():
        assert all(float(b.conv3.weight.abs().sum()) == 0 for stage in (net.layer1, net.layer4) for b in stage)
        assert float(net.fc.weight.abs().sum()) == 0 and float(net.layer1[0].conv1.weight.abs().sum()) > 0
        w = net.layer3[0].conv2.weight.detach()
    # scaled He init: std sqrt(2 / (out * k^2)) * L^(-1/4) with L = 16
    expected = math.sqrt(2 / (w.shape[0] * 9)) * 16 ** -0.25
    assert float(w.std()) == pytest.approx(expected, rel=0.05)

    model = create_model("xdnn-resnet50", K)
    assert model.net.fc.bias is not None and model.net.fc.weight.shape == (K, 2048)  # the reference's biased head


def test_xdnn_is_positively_homogeneous() -> None:
    model = create_model("xdnn-resnet18", K).double().eval()
    perturb_(model.net)
    x = model.prepare_input(_images(dtype=torch.float64))
    bias = model.net.fc.bias
    with torch.no_grad():
        torch.testing.assert_close(model(3.7 * x) - bias, 3.7 * (model(x) - bias))


# ---------------------------------------------------------------------------------------------- weights
@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty torch hub cache with no network: every download attempt is refused."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("offline in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("name, filename", [
    ("resnet18", "resnet18-f37072fd.pth"),
    ("resnet50", "resnet50-0676ba61.pth"),
    ("bcos-resnet18", "resnet_18-68b4160fff.pth"),
    ("bcos-resnet50", "resnet_50-f46c1a4159.pth"),
    ("xdnn-resnet50", "xfixup_resnet50_model_best.pth.tar"),
])
def test_pretrained_absent_offline_names_the_file(hub_dir: Path, name: str, filename: str) -> None:
    with pytest.raises(MgkitError, match=rf"cannot download .* {name} from .*offline in this test.* to "
                                         rf"{re.escape(str(hub_dir / filename))}, or pass --weights PATH"):
        create_model(name, K, pretrained=True)
    assert not hub_dir.exists() or not any(hub_dir.iterdir())  # nothing half-written


def test_pretrained_absent_for_xdnn_resnet18(hub_dir: Path) -> None:
    with pytest.raises(MgkitError, match="no ImageNet weights exist for xdnn-resnet18"):
        create_model("xdnn-resnet18", K, pretrained=True)


def test_pretrained_loads_from_hub_cache_before_head_replacement(hub_dir: Path) -> None:
    hub_dir.mkdir(parents=True)
    imagenet = torchvision.models.resnet18()
    torch.save(imagenet.state_dict(), hub_dir / "resnet18-f37072fd.pth")
    model = create_model("resnet18", K, pretrained=True)
    torch.testing.assert_close(model.net.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert model.net.fc.weight.shape == (K, 512)

    # the authors' X-DNN checkpoint: {"state_dict": ...} saved from DataParallel, bias-free ImageNet fc
    xnet = xdnn.xdnn_resnet50()
    perturb_(xnet)
    torch.save({"epoch": 90, "arch": "xfixup_resnet50", "best_acc1": torch.tensor(74.0),
                "state_dict": {f"module.{k}": v for k, v in xnet.state_dict().items()}},
               hub_dir / "xfixup_resnet50_model_best.pth.tar")
    model = create_model("xdnn-resnet50", K, pretrained=True)
    torch.testing.assert_close(model.net.layer4[2].conv3.weight, xnet.layer4[2].conv3.weight)
    assert model.net.fc.weight.shape == (K, 2048) and model.net.fc.bias is not None


@pytest.mark.parametrize("name", ["resnet18", "bcos-resnet18", "xdnn-resnet18"])
def test_weights_round_trip(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, K).eval()
    perturb_(model.net, seed=1)
    x = model.prepare_input(_images())
    torch.save(model.net.state_dict(), tmp_path / "plain.pt")
    loaded = create_model(name, K, weights=tmp_path / "plain.pt").eval()
    fresh = create_model(name, K).eval()
    load_weights(fresh, tmp_path / "plain.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        torch.testing.assert_close(fresh(x), model(x))


def test_checkpoint_containers_and_prefixes(tmp_path: Path) -> None:
    model = create_model("xdnn-resnet18", K)
    net_state = model.net.state_dict()
    variants = {
        "guided_model": model.state_dict(),  # "net." prefix
        "data_parallel": {f"module.{k}": v for k, v in net_state.items()},
        "training_checkpoint": {"model": net_state, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}},
        "model_state_dict": {"model_state_dict": {f"module.{k}": v for k, v in net_state.items()}},
    }
    for variant, obj in variants.items():
        torch.save(obj, tmp_path / f"{variant}.pt")
        loaded = create_model("xdnn-resnet18", K, weights=tmp_path / f"{variant}.pt")
        for key, value in loaded.net.state_dict().items():
            torch.testing.assert_close(value, net_state[key], msg=f"{variant}: {key}")


def test_reference_bcos_checkpoint_is_remapped(tmp_path: Path) -> None:
    """The reference saves Sequential(BcosResNet, LogitBias) inside {"model": ...} result files."""
    torch.manual_seed(0)
    model = create_model("bcos-resnet18", K).eval()
    perturb_(model.net, seed=2)
    x = model.prepare_input(_images())
    with torch.no_grad():
        expected = model(x)
    reference = {f"0.{k}": v for k, v in model.net.state_dict().items()}
    torch.save({"model": reference, "epochs": 10, "F-Score": 0.8, "dataset": "VOC2007"}, tmp_path / "ref.pt")
    loaded = create_model("bcos-resnet18", K, weights=tmp_path / "ref.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)

    # a layout that stores the logit bias as a tensor under "1."
    torch.save({**reference, "1.logit_bias": torch.tensor(-2.0)}, tmp_path / "ref_bias.pt")
    loaded = create_model("bcos-resnet18", K, weights=tmp_path / "ref_bias.pt").eval()
    assert loaded.net.logit_layer.logit_bias == pytest.approx(-2.0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected - math.log(1 / 999) - 2.0, rtol=1e-5, atol=1e-5)


def test_imagenet_shaped_weights_file_loads_before_head_replacement(tmp_path: Path) -> None:
    import bcos.models.pretrained as bcos_pretrained

    imagenet = bcos_pretrained.resnet18(pretrained=False)  # the package's own 1000-class layout
    torch.save(imagenet.state_dict(), tmp_path / "bcos_imagenet.pth")
    model = create_model("bcos-resnet18", K, weights=tmp_path / "bcos_imagenet.pth")
    torch.testing.assert_close(model.net.layer2[0].conv1.linear.weight, imagenet.layer2[0].conv1.linear.weight)
    assert model.net.fc.linear.weight.shape == (K, 512, 1, 1)


def test_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(MgkitError, match="does not exist"):
        create_model("resnet18", K, weights=tmp_path / "missing.pt")

    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="corrupt.pt is not a readable PyTorch weights file"):
        create_model("resnet18", K, weights=tmp_path / "corrupt.pt")

    torch.save({"epoch": 3}, tmp_path / "no_state.pt")
    with pytest.raises(FormatError, match="holds no model state dict"):
        create_model("resnet18", K, weights=tmp_path / "no_state.pt")

    torch.save(create_model("resnet18", K).net.state_dict(), tmp_path / "vanilla.pt")
    with pytest.raises(FormatError, match=r"vanilla.pt does not fit bcos-resnet18: missing keys \['conv1.linear"):
        create_model("bcos-resnet18", K, weights=tmp_path / "vanilla.pt")
    with pytest.raises(FormatError, match="unexpected keys"):
        create_model("xdnn-resnet18", K, weights=tmp_path / "vanilla.pt")
    with pytest.raises(FormatError, match="3-class head, but the model was asked for 5 classes"):
        create_model("resnet18", 5, weights=tmp_path / "vanilla.pt")
    with pytest.raises(FormatError, match="does not fit resnet50"):
        create_model("resnet50", K, weights=tmp_path / "vanilla.pt")


# ---------------------------------------------------------------------------------------------- families
def test_family_records_hold_the_training_defaults_and_attributions() -> None:
    """The paper-spec §6 defaults (formerly config.FAMILY_DEFAULTS) and §3 attributions, per family."""
    assert FAMILIES["bcos"].training_defaults() == {"lr": 1e-4, "batch_size": 64, "train_epochs": 300,
                                                    "guide_epochs": 50, "attribution": "bcos"}
    for name, attribution in (("vanilla", "ixg"), ("xdnn", "intgrad")):
        assert FAMILIES[name].training_defaults() == {"lr": 1e-5, "batch_size": 16, "train_epochs": 100,
                                                      "guide_epochs": 50, "attribution": attribution}
    assert [n for n, f in FAMILIES.items() if f.exact_intgrad] == ["xdnn"]
    assert [n for n, f in FAMILIES.items() if "bcos" in f.attributions] == ["bcos"]
    assert all(f.default_attribution in f.attributions for f in FAMILIES.values())
    with pytest.raises(UsageError, match="unknown model"):
        family_of("vgg11")
