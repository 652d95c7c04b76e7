"""Semantic segmentation with a U-Net (segmentation_models_pytorch, ResNet18 encoder).

Real data: PASCAL VOC read through ``torchvision.datasets.VOCSegmentation(download=False)``,
i.e. ``<data_root>/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}``.
Images are resized (bilinear) and masks (nearest) to ``image_size`` x ``image_size``, a multiple
of 32 because the encoder halves the resolution five times; training adds a random flip. The
metrics are therefore computed at that resolution, not at the original image size.

Embedded default (``data_root: null``): synthetic scenes generated from ``data_seed`` -
disks, rotated rectangles, triangles and rings in random colours on noisy, striped, shaded
backgrounds, with per-pixel class masks (0 = background, 1..4 = shape) and, like VOC, a thin
band of ``255`` ("ignore") pixels along every class boundary.

Metrics (``miou``, ``pixel_accuracy``) follow the VOC protocol: one confusion matrix is
accumulated over all non-ignored pixels, IoU_c = TP / (TP + FP + FN), and the mean runs over the
classes that occur in the target or in the prediction (classes absent from both are skipped
rather than counted as 0 or 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import VOCSegmentation
from torchvision.datasets.voc import DATASET_YEAR_DICT
from torchvision.transforms import functional as TF

from clip_core._validation import check_choice, check_int, check_path, invalid
from torch_clip.tasks.vision_data import IMAGENET_MEAN, IMAGENET_STD, ImageTask, require_dir

IGNORE_INDEX = 255
VOC_NUM_CLASSES = 21  # background + 20 object classes
EMBEDDED_CLASSES = ("background", "disk", "rectangle", "triangle", "ring")
EMBEDDED_IMAGE_SIZE = 64
REAL_IMAGE_SIZE = 512


# -- metrics -------------------------------------------------------------------------------------
def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """``cm[t, p]`` = number of pixels with target ``t`` and prediction ``p``; ignored pixels dropped.

    Sync-free (a per-step training metric): ignored pixels count into one spare bin, and a
    fixed-size ``index_add_`` replaces the boolean mask and ``bincount``, whose output sizes
    depend on the data and would make the host wait for the device.
    """
    bins = num_classes * num_classes
    valid = target != ignore_index
    index = torch.where(valid, target.long() * num_classes + pred.long(), bins).reshape(-1)
    counts = torch.zeros(bins + 1, dtype=torch.long, device=target.device)
    counts.index_add_(0, index, torch.ones_like(index))
    return counts[:bins].reshape(num_classes, num_classes)


def miou_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present in target or prediction (0-d tensor, 0 if none are)."""
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), 0.0)  # no boolean mask: no host sync
    return iou.sum() / present.sum().clamp(min=1)  # 0 when no class is present


def pixel_accuracy_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Correct pixels / non-ignored pixels (0-d tensor)."""
    total = cm.sum()
    return cm.diagonal().sum().double() / total.clamp(min=1)


# -- embedded synthetic scenes -------------------------------------------------------------------
def generate_scenes(
    count: int, size: int, seed: int, *, max_shapes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` RGB images (N, 3, size, size) float32 in [0, 1] and masks (N, size, size) uint8.

    Colours are random for every shape so the class must be read from the shape's outline;
    shapes may overlap (later ones on top). Everything is a function of ``seed``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((count, 3, size, size), dtype=np.float32)
    masks = np.empty((count, size, size), dtype=np.uint8)
    for n in range(count):
        # background: a shaded base colour, faint stripes of random direction, pixel noise
        base = rng.uniform(0.2, 0.8, size=(3, 1, 1))
        gx, gy = rng.uniform(-0.3, 0.3, size=2) / size
        phase, freq, angle = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6), rng.uniform(0, np.pi)
        stripes = 0.08 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        img = base + gx * xx + gy * yy + stripes + rng.normal(0, 0.06, size=(3, size, size))
        mask = np.zeros((size, size), dtype=np.uint8)
        for _ in range(rng.integers(1, max_shapes + 1)):
            cls = int(rng.integers(1, len(EMBEDDED_CLASSES)))
            cx, cy = rng.uniform(0.15, 0.85, size=2) * size
            r = rng.uniform(0.12, 0.25) * size
            theta = rng.uniform(0, 2 * np.pi)
            dx, dy = xx - cx, yy - cy
            u = np.cos(theta) * dx + np.sin(theta) * dy  # coordinates in the shape's own frame
            v = -np.sin(theta) * dx + np.cos(theta) * dy
            if cls == 1:  # disk
                region = dx**2 + dy**2 <= r**2
            elif cls == 2:  # rectangle (rotated), aspect ratio 1..2
                region = (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.5, 1.0))
            elif cls == 3:  # equilateral triangle: inside all three edge half-planes
                region = np.ones_like(mask, dtype=bool)
                for k in range(3):
                    a = theta + 2 * np.pi * k / 3
                    region &= np.cos(a) * dx + np.sin(a) * dy <= r / 2
            else:  # ring
                d2 = dx**2 + dy**2
                region = (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
            colour = rng.uniform(0, 1, size=(3, 1))
            img[:, region] = colour + rng.normal(0, 0.04, size=(3, int(region.sum())))
            mask[region] = cls
        # VOC-style "void" band: pixels with a 4-neighbour of another class become ignore
        edge = np.zeros_like(mask, dtype=bool)
        edge[1:, :] |= mask[1:, :] != mask[:-1, :]
        edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
        edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
        mask[edge] = IGNORE_INDEX
        images[n] = np.clip(img, 0.0, 1.0)
        masks[n] = mask
    return images, masks


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


# -- real VOC ------------------------------------------------------------------------------------
class VOCPairs(Dataset):
    """VOC image/mask pairs resized to ``size`` x ``size``; ``train`` adds a random horizontal flip."""

    def __init__(self, voc: VOCSegmentation, size: int, train: bool, num_classes: int) -> None:
        self.voc, self.size, self.train, self.num_classes = voc, size, train, num_classes

    def __len__(self) -> int:
        return len(self.voc)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.voc[index]
        if mask.mode not in ("P", "L"):  # RGB masks would need the palette decoded back to ids
            raise ValueError(
                f"{self.voc.masks[index]}: expected a palette (P) or greyscale PNG of class ids, "
                f"got mode {mask.mode}"
            )
        side = (self.size, self.size)
        image = image.convert("RGB").resize(side, Image.Resampling.BILINEAR)
        mask = mask.resize(side, Image.Resampling.NEAREST)  # nearest keeps ids and 255 intact
        x = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        y = torch.from_numpy(np.array(mask, dtype=np.int64))
        bad = (y >= self.num_classes) & (y != IGNORE_INDEX)
        if bad.any():
            raise ValueError(
                f"{self.voc.masks[index]} holds class ids {sorted(set(y[bad].tolist()))[:5]} "
                f"outside 0..{self.num_classes - 1} and {IGNORE_INDEX}"
            )
        if self.train and torch.rand(()) < 0.5:  # seeded per item by vision_data.SeededItems
            x, y = x.flip(-1), y.flip(-1)
        return x, y


class VOCTask(ImageTask):
    """U-Net + pixel-wise cross-entropy (ignore 255); metrics ``miou``, ``pixel_accuracy``, ``loss``."""

    name = "voc"
    metric_names = ("miou", "pixel_accuracy", "loss")
    primary_metric = "miou"

    def __init__(
        self,
        data_root: str | None = None,
        year: str = "2012",
        train_split: str = "train",
        val_split: str = "val",
        image_size: int | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        num_classes: int | None = None,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        embedded_train_size: int = 512,
        embedded_val_size: int = 64,
        data_seed: int = 0,
        max_val_items: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            max_val_items=max_val_items,
        )
        self.data_root = check_path("task.data_root", data_root, optional=True)
        # YAML reads an unquoted 2012 as an integer
        self.year = check_choice("task.year", str(year), DATASET_YEAR_DICT)
        splits = ("train", "val", "trainval")
        self.train_split = check_choice("task.train_split", train_split, splits)
        self.val_split = check_choice("task.val_split", val_split, splits)
        default_size = EMBEDDED_IMAGE_SIZE if data_root is None else REAL_IMAGE_SIZE
        size = check_int("task.image_size", image_size, 32, optional=True) or default_size
        if size % 32:  # the U-Net encoder downsamples 5 times
            raise invalid(
                "task.image_size", size, f"a multiple of 32 (e.g. {32 * max(1, round(size / 32))})"
            )
        self.image_size = size
        # class ids must stay below the ignore id
        classes = check_int("task.num_classes", num_classes, 2, IGNORE_INDEX, optional=True)
        if data_root is None and classes not in (None, len(EMBEDDED_CLASSES)):
            raise invalid(
                "task.num_classes",
                num_classes,
                f"null or {len(EMBEDDED_CLASSES)} with the embedded scenes "
                f"({', '.join(EMBEDDED_CLASSES)}; or set task.data_root)",
            )
        default_classes = len(EMBEDDED_CLASSES) if data_root is None else VOC_NUM_CLASSES
        self.num_classes = classes or default_classes
        if not isinstance(encoder_name, str) or not encoder_name:
            raise invalid("task.encoder_name", encoder_name, "an smp encoder name (e.g. resnet18)")
        self.encoder_name = encoder_name
        self.encoder_weights = encoder_weights
        self.embedded_train_size = check_int("task.embedded_train_size", embedded_train_size, 1)
        self.embedded_val_size = check_int("task.embedded_val_size", embedded_val_size, 1)
        self.data_seed = check_int("task.data_seed", data_seed, 0)

    # -- data --------------------------------------------------------------------------------
    def _setup_embedded(self) -> str:
        n_train, n_val, size = self.embedded_train_size, self.embedded_val_size, self.image_size
        images, masks = generate_scenes(n_train + n_val, size, self.data_seed)
        x = _normalize(torch.from_numpy(images)).to(self.device)
        y = torch.from_numpy(masks).long().to(self.device)
        self._train_tensors = (x[:n_train], y[:n_train])
        self._val_tensors = (x[n_train:], y[n_train:])
        return (
            f"embedded: synthetic shape scenes {size}x{size}, {len(EMBEDDED_CLASSES)} classes "
            f"(VOC proxy, data_seed={self.data_seed})"
        )

    def _resolve_root(self) -> Path:
        """The directory holding ``VOCdevkit``; pointing at ``.../VOCdevkit/VOC2012`` also works."""
        root = Path(self.data_root).expanduser()  # type: ignore[arg-type]
        base = Path(DATASET_YEAR_DICT[self.year]["base_dir"])
        tail = root.parts[-len(base.parts) :]
        if (root / "JPEGImages").is_dir() and tuple(tail) == base.parts:
            return Path(*root.parts[: -len(base.parts)])
        return root

    def _setup_voc(self) -> str:
        root = self._resolve_root()
        base = Path(DATASET_YEAR_DICT[self.year]["base_dir"])
        voc_dir = root / base
        layout = (
            f"  <data_root>/{base}/JPEGImages/<id>.jpg\n"
            f"  <data_root>/{base}/SegmentationClass/<id>.png   (palette PNG, class ids, 255 = void)\n"
            f"  <data_root>/{base}/ImageSets/Segmentation/{{{self.train_split},{self.val_split}}}.txt"
        )
        require_dir(Path(self.data_root).expanduser(), "VOC data_root", layout)  # type: ignore[arg-type]
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            require_dir(voc_dir / sub, f"VOC {self.year} under {root}", layout)
        sets = {}
        for role, split in (("train", self.train_split), ("val", self.val_split)):
            list_file = voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(
                    f"VOC {role} list {list_file} does not exist. Expected:\n{layout}"
                )
            voc = VOCSegmentation(str(root), year=self.year, image_set=split, download=False)
            missing = [p for p in (*voc.images, *voc.masks) if not Path(p).is_file()]
            if missing or not len(voc):
                what = f"missing files, e.g. {missing[:3]}" if missing else "an empty id list"
                raise FileNotFoundError(
                    f"VOC {role} split {list_file}: {what}. Expected:\n{layout}"
                )
            sets[role] = VOCPairs(voc, self.image_size, role == "train", self.num_classes)
        self._train_set, self._val_set = sets["train"], sets["val"]
        return f"VOC{self.year} segmentation at {root} ({self.train_split}/{self.val_split}, {self.image_size}px)"

    # -- Task API ----------------------------------------------------------------------------
    def _load_data(self) -> str:
        return self._setup_embedded() if self.data_root is None else self._setup_voc()

    def _build_model(self) -> tuple[torch.nn.Module, str, dict[str, Any]]:
        model = smp.Unet(
            encoder_name=self.encoder_name,
            encoder_weights=self.encoder_weights,
            in_channels=3,
            classes=self.num_classes,
        )
        weights = self.encoder_weights or "random init"
        source = (
            f"smp.Unet({self.encoder_name}, encoder weights: {weights}), {self.num_classes} classes"
        )
        extra = {
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "ignore_index": IGNORE_INDEX,
            "miou": "dataset confusion matrix; mean over classes present in target or prediction",
        }
        return model, source, extra

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]):
        images, masks = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
        cm = confusion_matrix(logits.detach().argmax(dim=1), masks, self.num_classes)
        return loss, {
            "miou": miou_from_confusion(cm).float(),
            "pixel_accuracy": pixel_accuracy_from_confusion(cm).float(),
        }

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        c = self.num_classes
        cm = torch.zeros((c, c), dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        try:
            with torch.no_grad():
                for images, masks in self.val_batches():
                    logits = self.model(images)
                    cm += confusion_matrix(logits.argmax(dim=1), masks, c)
                    loss_sum += F.cross_entropy(
                        logits, masks, ignore_index=IGNORE_INDEX, reduction="sum"
                    ).double()
        finally:
            self.model.train(was_training)
        pixels = max(int(cm.sum().item()), 1)
        return {
            "miou": float(miou_from_confusion(cm).item()),
            "pixel_accuracy": float(pixel_accuracy_from_confusion(cm).item()),
            "loss": loss_sum.item() / pixels,
        }
