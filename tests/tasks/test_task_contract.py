"""The task contract of ``tasks/base.py``: ``loss()`` never synchronises host and device.

The trainer logs once per window of steps; a task whose ``loss()`` reads a value on the host
(``.item()``, a boolean mask, ``bincount``) makes every step wait for the device. Each task runs
one small batch under the shared :class:`~tests.sync_helpers.SyncRecorder`, shrunk by its smoke
overrides (``conf/task/<task>.yaml``'s ``smoke``, the ones the ``--quick`` pipelines use).
"""

from __future__ import annotations

import traceback

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.suite_helpers import ROOT
from tests.sync_helpers import SyncRecorder
from torch_clip.suite import registry

#: syncs inside libraries that a task cannot avoid without giving up their fast path:
#: transformers' SDPA mask builder asks ``padding_mask.all()`` to drop an all-ones mask.
LIBRARY_SYNCS = ("transformers/masking_utils.py",)


class OwnSyncRecorder(SyncRecorder):
    """Records the syncs that do not come from :data:`LIBRARY_SYNCS` (kept apart, for the report)."""

    def __init__(self) -> None:
        super().__init__()
        self.library: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        seen = len(self.syncs)
        out = super().__torch_function__(func, types, args, kwargs)
        if len(self.syncs) > seen:
            files = [frame.filename for frame in traceback.extract_stack()]
            if any(lib in f for f in files for lib in LIBRARY_SYNCS):
                self.library.append(self.syncs.pop())
        return out


@pytest.mark.parametrize("name", registry.tasks())
def test_loss_makes_no_host_sync(name, single_thread):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"task={name}", *registry.smoke(name)])
    task = instantiate(cfg.task, _convert_="all")
    task.setup(torch.device("cpu"), 0)
    batch = next(iter(task.train_batches(0, 0, seed=0)))
    recorder = OwnSyncRecorder()
    with recorder:
        loss, metrics = task.loss(batch)
    assert recorder.syncs == [], f"{name}.loss() synchronises: {recorder.syncs}"
    assert loss.ndim == 0 and all(isinstance(v, torch.Tensor) for v in metrics.values())
