"""Code shared by the image tasks (:mod:`tasks.imagenet`, :mod:`tasks.voc`).

Two data back-ends sit behind one batching scheme built on :mod:`tasks.sampling`:

* the embedded proxies live as whole tensors on the task device and are sliced by index;
* real datasets on disk are read by a ``DataLoader`` whose batches are exactly the index
  lists from :func:`tasks.sampling.batch_indices`. Each item carries its own RNG seed derived
  from ``(seed, epoch, index)``, so random crops/flips do not depend on the number of workers,
  on which worker loads an item, or on resuming mid-epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from clip_core._validation import check_int
from torch_clip.tasks.base import Task, TaskInfo
from torch_clip.tasks.sampling import batch_indices, num_batches

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def require_dir(path: Path, what: str, layout: str) -> None:
    """Raise a ``FileNotFoundError`` that names the missing directory and the expected layout."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what}: directory {path} does not exist. Expected layout:\n{layout}"
        )


def read_image(path: str) -> Any:
    """torchvision's image loader, an unreadable file named in one line instead of PIL's error."""
    from PIL import UnidentifiedImageError
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(
            f"image {path} cannot be read ({type(exc).__name__}); replace or delete it "
            "(expected a JPEG/PNG file that PIL opens)"
        ) from None


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch`` (each index occurs once per epoch)."""
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**63 - 1)


def spread_indices(n: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all of them when ``limit`` is None)."""
    if limit is None or limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


class SeededItems(Dataset):
    """Item ``(index, seed)`` is ``base[index]`` computed under ``torch.manual_seed(seed)``.

    torchvision's v1 transforms draw from the global torch RNG; forking it keeps the caller's
    RNG untouched when loading happens in the main process (``num_workers=0``).
    """

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.base[index]


def _to_device(batch: Iterable[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in batch)


class ImageTask(Task):
    """Batching, step counting and validation iteration common to the image tasks.

    Subclasses fill either ``_train_tensors``/``_val_tensors`` (embedded data, already on the
    device) or ``_train_set``/``_val_set`` (map-style datasets yielding tensor tuples).
    """

    data_root: object = None  # set by the subclass; None selects the embedded data

    def __init__(
        self,
        *,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        max_val_items: int | None,
    ) -> None:
        self.batch_size = check_int("task.batch_size", batch_size, 1)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)
        self.num_workers = check_int("task.num_workers", num_workers, 0)
        self.max_val_items = check_int("task.max_val_items", max_val_items, 1, optional=True)
        self.device = torch.device("cpu")
        self._train_tensors: tuple[torch.Tensor, ...] | None = None
        self._val_tensors: tuple[torch.Tensor, ...] | None = None
        self._train_set: Dataset | None = None
        self._val_set: Dataset | None = None

    # -- set-up template: subclasses load their data and build their model --------------------
    def _load_data(self) -> str:
        """Fill the train/val tensors or datasets; return a description of the data used."""
        raise NotImplementedError

    def _build_model(self) -> tuple[torch.nn.Module, str, dict[str, Any]]:
        """The model (on CPU), its description, and extra facts for ``TaskInfo.extra``."""
        raise NotImplementedError

    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        self.device = torch.device(device)
        self._train_tensors = self._val_tensors = None
        self._train_set = self._val_set = None
        data_source = self._load_data()
        self._limit_val()
        with torch.random.fork_rng(devices=[]):  # the init depends on ``seed`` only
            torch.manual_seed(seed)
            model, model_source, extra = self._build_model()
        self.model = model.to(self.device)
        return TaskInfo(
            data_source=data_source,
            model_source=model_source,
            num_train=self.num_train,
            num_val=self.num_val,
            embedded=self.data_root is None,
            extra=extra,
        )

    # -- sizes -------------------------------------------------------------------------------
    @property
    def num_train(self) -> int:
        if self._train_tensors is not None:
            return len(self._train_tensors[0])
        if self._train_set is not None:
            return len(self._train_set)  # type: ignore[arg-type]
        raise RuntimeError(f"{type(self).__name__}.setup() has not been called")

    @property
    def num_val(self) -> int:
        if self._val_tensors is not None:
            return len(self._val_tensors[0])
        if self._val_set is not None:
            return len(self._val_set)  # type: ignore[arg-type]
        raise RuntimeError(f"{type(self).__name__}.setup() has not been called")

    def _limit_val(self) -> None:
        """Apply ``max_val_items``: a fixed, evenly spread subset of the validation data."""
        if self.max_val_items is None:
            return
        keep = spread_indices(self.num_val, self.max_val_items)
        if self._val_tensors is not None:
            idx = torch.tensor(keep, device=self._val_tensors[0].device)
            self._val_tensors = tuple(t[idx] for t in self._val_tensors)
        elif self._val_set is not None:
            self._val_set = Subset(self._val_set, keep)

    # -- Task API ----------------------------------------------------------------------------
    def steps_per_epoch(self, world_size: int = 1) -> int:
        # The global batch is ``batch_size`` whatever the world size, so steps do not change.
        return num_batches(self.num_train, self.batch_size)

    def train_batches(
        self, epoch: int, start: int = 0, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        indices = batch_indices(
            self.num_train,
            self.batch_size,
            seed=seed,
            epoch=epoch,
            start=start,
            rank=rank,
            world_size=world_size,
        )
        if self._train_tensors is not None:
            tensors = self._train_tensors
            for idx in indices:
                idx = idx.to(tensors[0].device)
                yield tuple(t[idx] for t in tensors)
            return
        batches = [[(i, sample_seed(seed, epoch, i)) for i in idx.tolist()] for idx in indices]
        if not batches:  # start past the end of the epoch
            return
        loader = DataLoader(
            SeededItems(self._train_set),  # type: ignore[arg-type]
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            yield _to_device(batch, self.device)

    def val_batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """The validation data in a fixed order, ``eval_batch_size`` items at a time."""
        if self._val_tensors is not None:
            n = len(self._val_tensors[0])
            for lo in range(0, n, self.eval_batch_size):
                yield tuple(t[lo : lo + self.eval_batch_size] for t in self._val_tensors)
            return
        loader = DataLoader(
            self._val_set,  # type: ignore[arg-type]
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            yield _to_device(batch, self.device)
