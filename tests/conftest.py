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
def history_path(request, monkeypatch):
    """Run a test on both update paths of the auto history: CPU tensors default to the host
    (NumPy) path; the device path is the one CUDA runs."""
    from clip_core.history import SortedHistory

    monkeypatch.setattr(SortedHistory, "host_path_on_cpu", request.param == "host")
    return request.param
