"""The `mgkit explain` figure: drawn content checked axis by axis, and what it shows for a model."""

import numpy as np
import pytest
import torch
from PIL import Image

from mgkit.attribution import attribute
from mgkit.errors import UsageError
from mgkit.models import create_model
from mgkit.explain import figure
from mgkit.explain.figure import (ModelMaps, Pairs, explanation_pairs, ground_truth_pairs, render_explanations,
                                  save_figure)

CLASSES = ["circle", "square", "triangle"]
H = W = 24


def _scene(seed: int = 0, n: int = 3):
    """n images; image i has classes {0} / {0, 2} / {1, 2} ..., one box per class, two boxes of class 2 on the last."""
    rng = np.random.default_rng(seed)
    images = (rng.random((n, H, W, 3)) * 80).astype(np.uint8)
    labels = np.zeros((n, 3))
    present = [[0], [0, 2], [1, 2]][:n]
    boxes = []
    for i, classes in enumerate(present):
        rows = []
        for c in classes:
            x0, y0 = 2 + 5 * c, 3 + 2 * i
            images[i, y0:y0 + 8, x0:x0 + 8, c] = 240
            labels[i, c] = 1
            rows.append([c, x0, y0, x0 + 8, y0 + 8])
        if i == 2:
            rows.append([2, 14, 14, 22, 22])
        boxes.append(np.array(rows, np.float32))
    return images, labels, boxes


def _synthetic_models(pairs: Pairs, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = len(pairs.image)
    base = ModelMaps("baseline", rng.normal(size=(p, H, W)), epg=rng.random(p))
    colour = rng.random((p, H, W, 4)).astype(np.float32)
    guided = ModelMaps("guided", rng.normal(size=(p, H, W)), epg=rng.random(p), colour=colour)
    return base, guided


def _axes(fig, prefix):
    return [ax for ax in fig.axes if ax.get_label().startswith(prefix)]


def test_ground_truth_pairs_hand_worked():
    labels = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]])
    pairs = ground_truth_pairs(labels)
    assert pairs.image.tolist() == [0, 0, 2, 2, 2] and pairs.classes.tolist() == [0, 2, 0, 1, 2]
    capped = ground_truth_pairs(labels, max_classes=2)
    assert capped.image.tolist() == [0, 0, 2, 2] and capped.classes.tolist() == [0, 2, 0, 1]


def test_figure_content(tmp_path):
    images, labels, boxes = _scene()
    pairs = ground_truth_pairs(labels)
    base, guided = _synthetic_models(pairs)
    out = tmp_path / "fig.png"
    fig = render_explanations(images, boxes, CLASSES, pairs, [base, guided], out, ids=["a", "b", "c"], dpi=60)

    # grid: 3 rows x (1 image + 2 class slots x (1 baseline + 2 guided cells)) + the colour bar
    slots = 2
    assert len(fig.axes) == 3 * (1 + slots * 3) + 1
    assert len(_axes(fig, "colorbar")) == 1

    image_axes = _axes(fig, "image:")
    assert len(image_axes) == 3
    for i, ax in enumerate(image_axes):
        assert len(ax.patches) == len(boxes[i])  # one rectangle per box
        assert ax.images[0].get_array().shape == (H, W, 3)
        texts = {t.get_text() for t in ax.texts}
        assert texts == {CLASSES[int(c)] for c in boxes[i][:, 0]}
        assert ax.get_ylabel() == "abc"[i]

    for model, n_cells in ((base, 1), (guided, 2)):
        maps_axes = _axes(fig, f"map:{model.label}:")
        assert len(maps_axes) == len(pairs.image)  # one heat map per (image, class) pair
        for p, (i, c) in enumerate(zip(pairs.image, pairs.classes)):
            (ax,) = _axes(fig, f"map:{model.label}:{i}:{c}")
            assert len(ax.images) == 2  # grey image + heat map
            heat = np.asarray(ax.images[1].get_array())
            assert heat.shape == (H, W)
            # the heat map is the positive part of this pair's map over its maximum
            expected = np.clip(model.maps[p], 0, None) / np.clip(model.maps[p], 0, None).max()
            np.testing.assert_allclose(heat, expected, rtol=1e-6)
            assert ax.get_title() == f"{model.label}: {CLASSES[c]}, EPG {model.epg[p]:.2f}"
            # outlines of the explained class's boxes only
            assert len(ax.patches) == int((boxes[i][:, 0] == c).sum())
        colour_axes = _axes(fig, f"colour:{model.label}:")
        assert len(colour_axes) == (len(pairs.image) if n_cells == 2 else 0)
        for ax in colour_axes:
            assert np.asarray(ax.images[0].get_array()).shape == (H, W, 4)
            assert "B-cos" in ax.get_title()
    # image 0 has one class: its second slot is empty in every model block
    assert len(_axes(fig, "empty")) == 1 + 2

    assert sum(a.get_label() == "separator" for a in fig.artists) == 2  # one rule before each model block
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == CLASSES

    assert out.is_file() and out.stat().st_size > 20_000
    png = Image.open(out)
    assert png.size == tuple(round(v) for v in fig.get_size_inches() * 60)
    pixels = np.asarray(png.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # not a blank canvas
    assert not list(tmp_path.glob(".*.tmp"))


def test_pdf_and_bad_suffix(tmp_path):
    images, labels, boxes = _scene(n=1)
    pairs = ground_truth_pairs(labels)
    base, _ = _synthetic_models(pairs)
    fig = render_explanations(images, boxes, CLASSES, pairs, [base], tmp_path / "fig.pdf")
    assert (tmp_path / "fig.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(UsageError, match="png or .pdf"):
        save_figure(fig, tmp_path / "fig.jpg")
    assert not (tmp_path / "fig.jpg").exists()


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    images, labels, boxes = _scene(n=1)
    pairs = ground_truth_pairs(labels)
    base, _ = _synthetic_models(pairs)
    fig = render_explanations(images, boxes, CLASSES, pairs, [base])

    def broken(path, **kw):
        open(path, "wb").write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        save_figure(fig, tmp_path / "fig.png")
    assert list(tmp_path.iterdir()) == []


def test_mismatched_maps_are_refused():
    images, labels, boxes = _scene()
    pairs = ground_truth_pairs(labels)
    bad = ModelMaps("m", np.zeros((len(pairs.image) - 1, H, W)))
    with pytest.raises(UsageError, match="model 'm': maps have shape"):
        render_explanations(images, boxes, CLASSES, pairs, [bad])


@pytest.mark.usefixtures("one_thread")
def test_explanation_pairs_maps_and_epg():
    torch.manual_seed(0)
    images, labels, boxes = _scene()
    model = create_model("resnet18", 3)
    pairs, maps = explanation_pairs(model, images, labels, boxes, method="ixg", layer="input", label="base")
    assert maps.label == "base" and maps.colour is None
    x = model.prepare_input(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    expected, _ = attribute(model, x[pairs.image], torch.from_numpy(pairs.classes), method="ixg", layer="input",
                            create_graph=False)
    np.testing.assert_allclose(maps.maps, expected.numpy(), rtol=1e-5, atol=1e-7)
    # EPG by hand: positive energy inside the union of the class's boxes / all positive energy
    for p, (i, c) in enumerate(zip(pairs.image, pairs.classes)):
        inside = np.zeros((H, W), bool)
        for cls, x0, y0, x1, y1 in boxes[i]:
            if int(cls) == c:
                inside[int(y0):int(y1), int(x0):int(x1)] = True
        pos = np.clip(maps.maps[p], 0, None)
        assert maps.epg[p] == pytest.approx(pos[inside].sum() / pos.sum(), rel=1e-5)

    # a captum method through the same entry point, on the same pairs
    _, sal = explanation_pairs(model, images, labels, boxes, method="captum:Saliency", layer="input", pairs=pairs)
    assert sal.maps.shape == maps.maps.shape and (sal.maps >= 0).all()


@pytest.mark.usefixtures("one_thread")
def test_bcos_colour_images_come_from_the_dynamic_linear_map():
    torch.manual_seed(0)
    images, labels, boxes = _scene()
    model = create_model("bcos-resnet18", 3).eval()
    pairs, maps = explanation_pairs(model, images, labels, boxes, method="bcos", layer="input")
    assert maps.colour.shape == (len(pairs.image), H, W, 4)
    assert np.isfinite(maps.colour).all() and maps.colour.min() >= 0 and maps.colour.max() <= 1
    # the weights the colour image is drawn from: W(x) . x summed over the 6 channels is the B-cos map
    x = model.prepare_input(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)[pairs.image]
    cls = torch.from_numpy(pairs.classes)
    w = figure._dynamic_weights(model, x, cls)
    np.testing.assert_allclose((w * x).sum(1).numpy(), maps.maps, rtol=1e-4, atol=1e-6)
    # colour channel r: the weight of r against 1-r after clamping negative weights, where alpha > 0
    r, inv = w[:, 0].clamp(min=0), w[:, 3].clamp(min=0)
    peak = w.abs().amax(1)
    expected_r = (r / (peak + 1e-12)) / ((r + inv) / (peak + 1e-12) + 1e-12)
    np.testing.assert_allclose(maps.colour[..., 0], expected_r.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_class_without_box_has_no_epg(tmp_path):
    torch.manual_seed(0)
    images, labels, boxes = _scene(n=2)
    labels[0, 1] = 1  # image 0 is labelled "square" but has no square box
    model = create_model("resnet18", 3).eval()
    pairs, maps = explanation_pairs(model, images, labels, boxes, method="ixg", layer="input", label="m")
    no_box = (pairs.image == 0) & (pairs.classes == 1)
    assert no_box.sum() == 1 and np.isnan(maps.epg[no_box]).all() and np.isfinite(maps.epg[~no_box]).all()
    fig = render_explanations(images, boxes, CLASSES, pairs, [maps])
    (ax,) = _axes(fig, "map:m:0:1")
    assert ax.get_title() == "m: square"  # no EPG in the title
    # outside mode (Waterbirds' place task): evidence outside the boxes, defined without a box
    _, out = explanation_pairs(model, images, labels, boxes, method="ixg", layer="input", pairs=pairs, outside=True)
    assert np.isfinite(out.epg).all()


def test_long_labels_take_a_line_of_their_own():
    images, labels, boxes = _scene(n=1)
    pairs = ground_truth_pairs(labels)
    base, _ = _synthetic_models(pairs)
    base.label = "bcos-resnet50 energy-size"
    fig = render_explanations(images, boxes, CLASSES, pairs, [base], title="a\nb " + "x " * 200)
    (ax,) = _axes(fig, "map:")
    assert ax.get_title() == f"bcos-resnet50 energy-size\n{CLASSES[0]}, EPG {base.epg[0]:.2f}"
    # the long title line is wrapped to the figure's width: no line longer than the figure holds
    lines = fig._suptitle.get_text().splitlines()
    assert len(lines) > 3 and max(map(len, lines)) <= fig.get_figwidth() * 72 / (9 * 0.55)
