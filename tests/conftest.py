"""Shared pytest configuration for the clip_core tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for modules of tiny-tensor tests: avoids thread wake-up costs and
    contention on a busy machine (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["host", "device"])
def history_path(request):
    """Both update paths of the auto history, for a test to pass as ``history_path``: CPU
    tensors default to the host (NumPy) path; the device path is the one CUDA runs."""
    return request.param


#: the files whose tests run longest (``pytest --durations=30``): minutes each, with subprocesses
LONGEST_FILES = ("test_reproduce.py", "test_torchrun_tasks.py", "test_resilience.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the other slow end-to-end tests, then the rest: under
    ``-n 2`` the long ones then overlap the many short ones instead of running alone at the end
    (the order within each group is kept)."""

    def rank(item) -> int:
        if item.path.name in LONGEST_FILES:
            return 0
        return 1 if item.get_closest_marker("slow") is not None else 2

    items.sort(key=rank)
