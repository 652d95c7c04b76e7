"""ImageNet classification with a randomly initialised torchvision ResNet18.

Real data: the ImageFolder layout ``<data_root>/train/<wnid>/*.JPEG`` and
``<data_root>/val/<wnid>/*.JPEG`` (validation images sorted into class folders), read with the
usual RandomResizedCrop + horizontal flip for training and Resize + CenterCrop for validation.

Embedded default (``data_root: null``): scikit-learn's bundled digits (1797 grey 8x8 images,
10 classes), upsampled to ``image_size`` (32) and repeated to 3 channels, with a fixed stratified
1500/297 train/val split. It is a small offline stand-in that exercises the same model and loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

from clip_core._validation import check_int, check_path, invalid
from torch_clip.tasks.vision_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTask,
    read_image,
    require_dir,
)

EMBEDDED_IMAGE_SIZE = 32
REAL_IMAGE_SIZE = 224
EMBEDDED_NUM_VAL = 297  # 1797 digits -> 1500 train / 297 val
LAYOUT = (
    "  <data_root>/train/<wnid>/*.JPEG   (one folder per class)\n"
    "  <data_root>/val/<wnid>/*.JPEG     (validation images sorted into the same class folders)"
)


def top1_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max equals the target, as a 0-d tensor (no host sync)."""
    return (logits.argmax(dim=1) == target).float().mean()


class ImageNetTask(ImageTask):
    """ResNet18 + cross-entropy; metrics: top-1 ``accuracy`` (train and val) and val ``loss``."""

    name = "imagenet"
    metric_names = ("accuracy", "loss")
    primary_metric = "accuracy"

    def __init__(
        self,
        data_root: str | None = None,
        image_size: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        num_classes: int | None = None,
        max_val_items: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            max_val_items=max_val_items,
        )
        self.data_root = check_path("task.data_root", data_root, optional=True)
        # null picks the scale that suits the data: 32 px for the 8x8 digits, 224 px for ImageNet.
        default_size = EMBEDDED_IMAGE_SIZE if data_root is None else REAL_IMAGE_SIZE
        size = check_int("task.image_size", image_size, 8, optional=True)
        self.image_size = size or default_size
        self.num_classes = check_int("task.num_classes", num_classes, 2, optional=True)
        if data_root is None and self.num_classes not in (None, 10):
            raise invalid(
                "task.num_classes",
                num_classes,
                "null or 10 with the embedded digits data (or set task.data_root)",
            )

    # -- data --------------------------------------------------------------------------------
    def _setup_embedded(self) -> str:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()  # ships inside scikit-learn, no download
        labels = digits.target.astype(np.int64)
        train_idx, val_idx = train_test_split(
            np.arange(len(labels)), test_size=EMBEDDED_NUM_VAL, stratify=labels, random_state=0
        )
        train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
        grey = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # values 0..16
        size = self.image_size
        images = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
        mean, std = images[train_idx].mean(), images[train_idx].std()  # train statistics only
        images = ((images - mean) / std).repeat(1, 3, 1, 1)
        y = torch.from_numpy(labels)
        self._train_tensors = (images[train_idx].to(self.device), y[train_idx].to(self.device))
        self._val_tensors = (images[val_idx].to(self.device), y[val_idx].to(self.device))
        self.num_classes = 10
        return f"embedded: scikit-learn digits 8x8 upsampled to {size}x{size} (ImageNet proxy)"

    def _setup_folder(self) -> str:
        root = Path(self.data_root).expanduser()  # type: ignore[arg-type]
        require_dir(root, "ImageNet data_root", LAYOUT)
        size = self.image_size
        normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
        val_tf = transforms.Compose(
            [
                transforms.Resize(round(size / 0.875)),  # 256 for 224, the usual ratio
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                normalize,
            ]
        )
        sets = {}
        for split, tf in (("train", train_tf), ("val", val_tf)):
            require_dir(root / split, f"ImageNet {split} split", LAYOUT)
            try:
                sets[split] = torchvision.datasets.ImageFolder(
                    str(root / split), transform=tf, loader=read_image
                )
            except FileNotFoundError as err:  # no class folders, or a class folder without images
                raise FileNotFoundError(
                    f"ImageNet {split} split at {root / split} holds no usable images ({err}). "
                    f"Expected layout:\n{LAYOUT}"
                ) from err
        classes = sets["train"].classes
        if sets["val"].classes != classes:
            missing = sorted(set(classes) ^ set(sets["val"].classes))[:5]
            raise ValueError(
                f"ImageNet train and val under {root} have different class folders "
                f"(e.g. {missing}); both splits need the same <wnid> folders"
            )
        if self.num_classes is not None and self.num_classes != len(classes):
            raise invalid(
                "task.num_classes",
                self.num_classes,
                f"null or {len(classes)}, the class folders in {root / 'train'}",
            )
        self.num_classes = len(classes)
        self._train_set, self._val_set = sets["train"], sets["val"]
        return f"ImageFolder at {root} ({len(classes)} classes, {size}px)"

    # -- Task API ----------------------------------------------------------------------------
    def _load_data(self) -> str:
        return self._setup_embedded() if self.data_root is None else self._setup_folder()

    def _build_model(self) -> tuple[torch.nn.Module, str, dict[str, Any]]:
        model = torchvision.models.resnet18(weights=None, num_classes=self.num_classes)
        source = f"torchvision resnet18 (random init, {self.num_classes} classes)"
        return model, source, {"image_size": self.image_size, "num_classes": self.num_classes}

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]):
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        return loss, {"accuracy": top1_accuracy(logits.detach(), labels)}

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        correct = torch.zeros((), device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        count = 0
        try:
            with torch.no_grad():
                for images, labels in self.val_batches():
                    logits = self.model(images)
                    correct += (logits.argmax(dim=1) == labels).sum()
                    loss_sum += F.cross_entropy(logits, labels, reduction="sum")
                    count += len(labels)
        finally:
            self.model.train(was_training)
        return {"accuracy": correct.item() / count, "loss": loss_sum.item() / count}
