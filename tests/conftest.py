"""Fixtures shared across the test tree."""

from typing import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded, and OpenMP threads spinning against other busy
    processes on a small CI machine can slow them down tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
