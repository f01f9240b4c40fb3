"""Engine and loader pieces, each on its own: box padding, batches from HDF5, worker signals, checkpoints
(slim, weights_only, non-finite refusal, model_from_checkpoint, export), the Pareto archive and
evaluation's (image, class) pair selection."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from helpers import perturb_
from mgkit.data.loader import Batch, H5Split, ignore_stop_signals, make_loader, pad_boxes
from mgkit.engine.checkpoint import (export_state_dict, model_from_checkpoint, save_checkpoint,
                                     set_rng_state, rng_state)
from mgkit.engine.split_metrics import evaluate, headline, result_sections
from mgkit.engine.pareto import ParetoArchive
from mgkit.errors import FormatError, MgkitError
from mgkit.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["a", "b", "c"]


# ------------------------------------------------------------------------------------------------ loader
def test_pad_boxes_by_hand():
    boxes = np.arange(4 * 5, dtype=np.float32).reshape(4, 5)  # 4 boxes; image 0 has 2, 1 none, 2 has 2
    index = np.array([0, 2, 2, 4])
    out = pad_boxes(boxes, index, np.array([2, 1, 0]))
    assert out.shape == (3, 2, 5)
    assert np.array_equal(out[0], boxes[2:4]) and np.array_equal(out[2], boxes[0:2])
    assert (out[1, :, 0] == -1).all() and (out[1, :, 1:] == 0).all()
    empty = pad_boxes(boxes, index, np.array([1]))
    assert empty.shape == (1, 1, 5) and empty[0, 0, 0] == -1


def test_h5split_keeps_the_requested_row_order(tiny_data):
    ds = H5Split(tiny_data, "train")
    rows = [5, 1, 5, 3]  # unsorted, with a repeat (padding samplers repeat rows)
    batch = ds[rows]
    singles = [ds[[r]] for r in rows]
    assert batch.index.tolist() == rows
    for i, one in enumerate(singles):
        assert torch.equal(batch.images[i], one.images[0]) and torch.equal(batch.labels[i], one.labels[0])
        n = int((one.boxes[0, :, 0] >= 0).sum())
        assert torch.equal(batch.boxes[i, :n], one.boxes[0, :n])
    assert batch.images.dtype == torch.uint8 and batch.boxes.shape[-1] == 5


def test_loader_order_depends_on_seed_and_epoch_only(tiny_data):
    def order(epoch, seed=0):
        loader = make_loader(H5Split(tiny_data, "train"), 8, shuffle=True, seed=seed, workers=0)
        loader.sampler.sampler.set_epoch(epoch)
        return torch.cat([b.index for b in loader]).tolist()

    assert order(1) == order(1) and order(1) != order(2) and order(1, seed=1) != order(1)
    assert sorted(order(1)) == list(range(32))


def test_workers_ignore_stop_signals():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        ignore_stop_signals(0)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


# ------------------------------------------------------------------------------------------- checkpoints
def _save(path, model, **kw):
    args = dict(model=model, model_name=model.name, classes=CLASSES, config={"stage": "train", "lr": 1e-3},
                epoch=2, metrics={"f1": 0.5, "epg": float("nan")}, data={"image_size": [32, 32]})
    save_checkpoint(path, **{**args, **kw})


def test_best_checkpoints_are_slim_plain_and_reload(tmp_path):
    model = create_model("bcos-resnet18", 3)
    perturb_(model.net)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(model.prepare_input(torch.rand(2, 3, 32, 32))).sum().backward()
    opt.step()  # Adam's moments: two more copies of the weights, in last.pt only
    _save(tmp_path / "best.pt", model)
    _save(tmp_path / "last.pt", model, optimizer=opt)
    for name in ("best.pt", "last.pt"):  # every file loads without unpickling code
        raw = torch.load(tmp_path / name, weights_only=True)
        assert set(raw["model"]) == set(model.net.state_dict())  # plain bcos keys, no "net." prefix
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert "optimizer" not in best and "rng" not in best and best["metrics"]["epg"] is None
    assert (tmp_path / "best.pt").stat().st_size < 0.6 * (tmp_path / "last.pt").stat().st_size
    loaded, info = model_from_checkpoint(tmp_path / "best.pt", expect_classes=CLASSES, expect_image_size=(32, 32))
    assert (info.model_name, info.family.name, info.classes, info.epoch, info.stage) == \
        ("bcos-resnet18", "bcos", CLASSES, 2, "train")
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    plain = tmp_path / "plain.pt"
    export_state_dict(tmp_path / "best.pt", plain)
    fresh = create_model("bcos-resnet18", 3).net
    fresh.load_state_dict(torch.load(plain, weights_only=True))  # the package's own keys
    assert torch.equal(fresh.conv1.linear.weight, model.net.conv1.linear.weight)


def test_model_from_checkpoint_refuses_mismatches_in_one_line(tmp_path):
    _save(tmp_path / "c.pt", create_model("resnet18", 3))
    with pytest.raises(MgkitError, match=r"trained on 3 classes \(a, b, c, …\), the data has 2 \(x, y, …\)"):
        model_from_checkpoint(tmp_path / "c.pt", expect_classes=["x", "y"])
    with pytest.raises(MgkitError, match="trained on 32x32 images, the data has 64x64"):
        model_from_checkpoint(tmp_path / "c.pt", expect_image_size=(64, 64))
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="junk.pt: not a readable checkpoint"):
        model_from_checkpoint(tmp_path / "junk.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(FormatError, match="not an mgkit checkpoint"):
        model_from_checkpoint(tmp_path / "plain.pt")


def test_non_finite_models_are_never_saved(tmp_path):
    model = create_model("resnet18", 3)
    model.net.bn1.running_var[0] = float("inf")
    with pytest.raises(MgkitError, match=r"refusing to save .*bn1.running_var"):
        _save(tmp_path / "x.pt", model)
    assert not list(tmp_path.iterdir())  # no file, no temporary left behind


def test_rng_state_round_trips_through_weights_only(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


# ------------------------------------------------------------------------------------------------ pareto
def test_pareto_archive_keeps_the_front_and_deletes_dominated_files(tmp_path):
    archive = ParetoArchive(tmp_path / "pareto")
    save = lambda path: path.write_bytes(b"x")  # noqa: E731
    assert archive.offer(1, {"f1": 0.5, "epg": 0.5, "iou": 0.5}, save)
    assert archive.offer(2, {"f1": 0.6, "epg": 0.4, "iou": 0.5}, save)  # a trade-off: both kept
    assert not archive.offer(3, {"f1": 0.4, "epg": 0.4, "iou": 0.4}, save)  # dominated by 1
    assert archive.offer(4, {"f1": 0.7, "epg": 0.6, "iou": 0.6}, save)  # dominates 1 and 2
    files = sorted(p.name for p in (tmp_path / "pareto").glob("*.pt"))
    assert [e["epoch"] for e in archive.entries] == [4] and files == [archive.entries[0]["checkpoint"]]
    index = json.loads((tmp_path / "pareto" / "pareto.json").read_text())
    again = ParetoArchive(tmp_path / "pareto")
    again.load()
    assert again.entries == index["entries"] == archive.entries


# -------------------------------------------------------------------------------------------- evaluation
def _eval_batch() -> Batch:
    """3 images: 0 has classes a, c with a box of a only; 1 has class b and no box; 2 has b with a box."""
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 1, 0]], dtype=torch.float32)
    boxes = torch.full((3, 1, 5), -1.0)
    boxes[0, 0] = torch.tensor([0, 4, 4, 20, 20])
    boxes[2, 0] = torch.tensor([1, 8, 8, 24, 24])
    images = torch.randint(0, 256, (3, 32, 32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return Batch(images=images, labels=labels, boxes=boxes, annotated=torch.ones(3, dtype=torch.bool),
                 index=torch.arange(3))


def test_evaluation_pairs_are_present_classes_of_images_with_boxes():
    """Pairs: every ground-truth class of an image with any box (0-a, 0-c: c has no box, an empty mask)
    and 2-b; image 1 has no box and is left out."""
    model = create_model("resnet18", 3)
    perturb_(model.net)
    result = evaluate(model, [_eval_batch()], device=torch.device("cpu"), attribution="ixg", layer="input")
    loc = result["localization"]
    assert loc["count"] == 3 and result["images"] == 3 and result["finite_logits"]
    assert {k: v["count"] for k, v in loc["per_class"].items()} == {0: 1, 1: 1, 2: 1}
    sections = result_sections(result, CLASSES)
    assert list(sections["per_class"]) == CLASSES
    assert sections["per_class"]["b"]["pairs"] == 1 and sections["per_class"]["b"]["support"] == 2
    assert sections["metrics"]["pairs"] == 3 and set(sections["iou_sweep"]) >= {"0.00", "0.50"}
    assert headline(result)["epg"] == pytest.approx(loc["epg"])


def test_per_image_sums_reproduce_the_headline_metrics_in_dataset_order():
    """Chunked and reordered passes still give per-image sums keyed by dataset row whose ratios are the
    split's F1, EPG and IoU; the sections carry their intervals and the encoded sums round-trip."""
    from mgkit.bootstrap import decode_per_image

    model = create_model("resnet18", 3)
    perturb_(model.net)
    batch = _eval_batch()
    batch.index = torch.tensor([7, 3, 5])
    one_px = batch.images.shape[1] * batch.images.shape[2]
    res = evaluate(model, [batch], device=torch.device("cpu"), attribution="ixg", layer="input", max_pixels=one_px)
    per = res["per_image"]
    assert list(per["index"]) == [3, 5, 7] and list(per["pairs"]) == [0, 1, 2]  # row 3 is image 1: no box
    cls, loc = res["classification"], res["localization"]
    assert 2 * per["tp"].sum() / (2 * per["tp"].sum() + per["fp"].sum() + per["fn"].sum()) == pytest.approx(cls["f1"])
    assert per["epg_sum"].sum() / per["pairs"].sum() == pytest.approx(loc["epg"])
    assert per["iou_sum"].sum() / per["pairs"].sum() == pytest.approx(loc["iou"])
    sec = result_sections(res, CLASSES, keep_per_image=True)
    m = sec["metrics"]
    assert m["epg_lo"] <= m["epg"] <= m["epg_hi"] and m["f1_lo"] <= m["f1"] <= m["f1_hi"]
    back = decode_per_image(json.loads(json.dumps(sec["per_image"])))
    assert list(back["index"]) == [3, 5, 7]
    assert back["epg_sum"] == pytest.approx(per["epg_sum"], rel=1e-6)
    assert "per_image" not in result_sections(res, CLASSES)  # epoch lines stay small
    chosen = evaluate(model, [batch], device=torch.device("cpu"), attribution="ixg", layer="input",
                      chosen_threshold=0.25)
    per = chosen["per_image"]
    assert per["iou_chosen_sum"].sum() / per["pairs"].sum() == pytest.approx(chosen["localization"]["iou_chosen"])
    m = result_sections(chosen, CLASSES)["metrics"]
    assert m["iou_chosen_lo"] <= m["iou_chosen"] <= m["iou_chosen_hi"]


def test_headline_leaves_missing_localization_as_none():
    batch = _eval_batch()
    batch.boxes[:] = -1  # no box anywhere: no pairs
    model = create_model("resnet18", 3)
    result = evaluate(model, [batch], device=torch.device("cpu"), attribution="ixg", layer="input")
    assert headline(result)["epg"] is None and headline(result)["iou"] is None
    assert result_sections(result, CLASSES)["metrics"]["epg"] is None


def test_evaluation_in_chunks_equals_one_pass():
    """A batch attributed one image per pass (max_pixels = one image) gives the same metrics."""
    model = create_model("resnet18", 3)
    perturb_(model.net)
    batch = _eval_batch()
    whole = evaluate(model, [batch], device=torch.device("cpu"), attribution="ixg", layer="input")
    one_px = batch.images.shape[1] * batch.images.shape[2]
    chunked = evaluate(model, [batch], device=torch.device("cpu"), attribution="ixg", layer="input",
                       max_pixels=one_px)
    assert chunked["images"] == whole["images"] == 3
    for key in ("epg", "iou", "count"):
        assert chunked["localization"][key] == pytest.approx(whole["localization"][key], rel=1e-5)
    assert chunked["classification"]["f1"] == pytest.approx(whole["classification"]["f1"])


def test_bf16_evaluation_on_the_cpu_stays_close():
    """--amp bf16 on the CPU runs the forward and attribution in bf16: the numbers move a little, not far."""
    model = create_model("resnet18", 3)
    perturb_(model.net)
    batch = _eval_batch()
    full = evaluate(model, [batch], device=torch.device("cpu"), attribution="ixg", layer="input")
    half = evaluate(model, [batch], device=torch.device("cpu"), attribution="ixg", layer="input", amp=True)
    assert half["localization"]["count"] == full["localization"]["count"]
    assert half["localization"]["epg"] != full["localization"]["epg"], "bf16 autocast did not run"
    for key in ("epg", "iou"):
        assert half["localization"][key] == pytest.approx(full["localization"][key], abs=0.03)
