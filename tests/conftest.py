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
