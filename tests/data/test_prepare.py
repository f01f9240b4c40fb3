"""The common prepare engine: box scaling, image decoding, parallel workers, --skip-bad, interruption."""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from mgkit.data.format import Sample, open_dataset
from mgkit.data.prepare import BadSample, Record, SourcePlan, _loaded, read_rgb, run_prepare, scale_boxes
from mgkit.errors import MgkitError


def test_scale_boxes_reference_formula():
    boxes = np.array([[1, 10.0, 20.0, 390.0, 300.0], [0, -5, 3, 50, 400], [2, 30, 30, 30.2, 80]])
    out, stats = scale_boxes(boxes, width=400, height=300, size=224)
    ref = []
    for c, *xy in boxes:
        sx, sy = 224 / 400, 224 / 300
        x0, y0, x1, y1 = (int(min(max(v * s, 0), 223)) for v, s in zip(xy, (sx, sy, sx, sy)))
        if x0 < x1 and y0 < y1:
            ref.append([c, x0, y0, x1, y1])
    np.testing.assert_array_equal(out, np.array(ref, np.float32))
    assert stats["boxes_clipped"] == 1  # the second box reaches outside the image
    assert stats["boxes_dropped"] == 1  # the third collapses to zero width


def test_read_rgb_converts_modes_and_rejects_truncated(tmp_path):
    Image.new("L", (10, 8), 100).save(tmp_path / "g.jpg")
    Image.new("CMYK", (10, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    for name in ("g.jpg", "c.jpg"):
        im = read_rgb(tmp_path / name)
        assert im.mode == "RGB" and im.size == (10, 8)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg", quality=95)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadSample, match="t.jpg"):
        read_rgb(tmp_path / "t.jpg")
    with pytest.raises(BadSample, match="not found"):
        read_rgb(tmp_path / "missing.jpg")


def _load(record: Record, size: int) -> Sample:
    i = record.payload
    if i == "bad":
        raise BadSample(f"{record.id}.jpg: unreadable")
    img = np.full((size, size, 3), i % 256, np.uint8)
    boxes, stats = scale_boxes(np.array([[i % 2, 0, 0, 10, 10]]), 20, 20, size)
    labels = np.zeros(2, np.uint8)
    labels[i % 2] = 1
    return Sample(id=record.id, image=img, labels=labels, boxes=boxes, stats=dict(stats))


def _plan(n: int, bad: tuple[int, ...] = ()) -> SourcePlan:
    recs = [Record(f"im{i}", "bad" if i in bad else i) for i in range(n)]
    return SourcePlan(source="toy", task="multilabel", classes=["a", "b"], load=_load,
                      splits={"train": recs, "val": recs[: n // 2]})


def test_workers_give_identical_files(tmp_path):
    for workers in (0, 3):
        run_prepare(_plan(70), tmp_path / f"w{workers}.h5", size=16, bbox_frac=0.3, seed=1, workers=workers, quiet=True)
    with open_dataset(tmp_path / "w0.h5") as a, open_dataset(tmp_path / "w3.h5") as b:
        for split in ("train", "val"):
            for key in ("images", "labels", "boxes", "box_index", "annotated", "ids"):
                np.testing.assert_array_equal(a.split(split)[key][:], b.split(split)[key][:])
        assert a.split("train")["annotated"][:].sum() == 21
        assert a.split("val")["annotated"][:].all()  # evaluation splits keep every box


class _CountingPool:
    """apply_async runs at get(); records how many tasks were submitted and not yet collected."""

    def __init__(self):
        self.outstanding = self.most = 0

    def apply_async(self, fn, args):
        self.outstanding += 1
        self.most = max(self.most, self.outstanding)
        pool = self

        class Result:
            def get(self):
                pool.outstanding -= 1
                return fn(*args)
        return Result()


def test_workers_get_a_bounded_number_of_chunks_ahead_and_results_come_in_order():
    pool = _CountingPool()
    records = list(range(1000))
    out = list(_loaded(pool, 2, lambda r: r * 10, records))
    assert out == [r * 10 for r in records]
    assert pool.most == 8 and pool.outstanding == 0  # 4 chunks per worker, not the 125 chunks of the split


def test_bad_sample_stops_or_is_skipped_and_counted(tmp_path):
    with pytest.raises(BadSample, match="im3.jpg"):
        run_prepare(_plan(10, bad=(3,)), tmp_path / "x.h5", size=16, bbox_frac=1, seed=0, quiet=True)
    assert not (tmp_path / "x.h5").exists()
    summary = run_prepare(_plan(10, bad=(3, 7)), tmp_path / "x.h5", size=16, bbox_frac=1, seed=0, skip_bad=True,
                          quiet=True)
    assert summary["splits"]["train"]["skipped"] == 2 and summary["splits"]["train"]["images"] == 8
    assert summary["splits"]["val"]["skipped"] == 1
    with open_dataset(tmp_path / "x.h5") as ds:
        ids = [s.decode() for s in ds.split("train")["ids"][:]]
        assert "im3" not in ids and len(ids) == 8


def test_bbox_frac_out_of_range(tmp_path):
    with pytest.raises(MgkitError, match="--bbox-frac"):
        run_prepare(_plan(4), tmp_path / "x.h5", size=16, bbox_frac=1.5, seed=0, quiet=True)


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_no_file(tmp_path, sig):
    out = tmp_path / "out.h5"
    script = textwrap.dedent(f"""
        import time, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        import test_prepare as t
        from mgkit.cli import handle_errors
        from mgkit.data.prepare import run_prepare
        def slow(record, size):
            if record.payload == 5:
                print("started", flush=True)
            time.sleep(0.01)
            return t._load(record, size)
        plan = t._plan(100000)
        plan.load = slow
        handle_errors(run_prepare)(plan, {str(out)!r}, size=16, bbox_frac=1, seed=0, quiet=True)
    """)
    # Default dispositions in the child: a signal ignored by the test process (e.g. by a pytest-xdist
    # worker after some earlier test) would be inherited and make the interruption a no-op.
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, preexec_fn=_default_signals)
    assert proc.stdout.readline().strip() == b"started"
    time.sleep(0.2)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert not out.exists()
    if sig != signal.SIGKILL:  # SIGKILL cannot be caught; only the temporary file may remain
        assert list(tmp_path.iterdir()) == []
