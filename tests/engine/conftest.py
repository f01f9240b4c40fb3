"""Shared fixtures for engine tests: a tiny synthetic data file and a baseline checkpoint."""

import shutil

import pytest

from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """32 train / 16 val images at 32x32 with every box usable for guidance."""
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    plan = synthetic.plan(task="multilabel", num_classes=4, spurious=None, n_train=32, n_val=16, n_test=8, seed=0)
    run_prepare(plan, path, size=32, bbox_frac=1.0, seed=0, quiet=True)
    return path


@pytest.fixture(scope="session")
def tiny_birds(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "birds.h5"
    plan = synthetic.plan(task="birds", num_classes=2, spurious=None, n_train=32, n_val=16, n_test=8, seed=0)
    run_prepare(plan, path, size=32, bbox_frac=0.5, seed=0, quiet=True)
    return path


@pytest.fixture(autouse=True)
def _free_disk(tmp_path):
    """Each run writes checkpoints of tens of MB; drop them as soon as a test is done."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)
