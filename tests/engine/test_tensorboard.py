"""TensorBoard event files next to metrics.jsonl, read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest

from mgkit.engine import tensorboard


def test_scalars_take_the_flat_numbers_of_train_and_val():
    line = {"epoch": 2, "seconds": 1.5, "train": {"loss": 0.5, "lr": 1e-3, "note": "x"},
            "val": {"f1": 0.8, "epg": None, "iou": 0.25}, "metrics": {"f1": 0.8}}
    assert tensorboard.scalars(line) == {"train/loss": 0.5, "train/lr": 1e-3, "val/f1": 0.8, "val/iou": 0.25,
                                         "time/seconds_per_epoch": 1.5}


@pytest.mark.skipif(not tensorboard.AVAILABLE, reason="tensorboard is not installed (an optional extra)")
def test_epoch_log_writes_events_that_tensorboard_reads(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tensorboard.epoch_log(tmp_path) as log:
        for epoch, loss in ((1, 0.9), (2, 0.4)):
            log(epoch, {"train": {"loss": loss}, "val": {"f1": loss / 2}})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1  # one file per process, not per epoch
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("train/loss")] == [(1, 0.9), (2, 0.4)]
    assert [e.step for e in acc.Scalars("val/f1")] == [1, 2]


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard, "AVAILABLE", False)
    with tensorboard.epoch_log(tmp_path) as log:
        log(1, {"train": {"loss": 1.0}})
    assert list(tmp_path.iterdir()) == []
