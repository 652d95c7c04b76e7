"""Tests for the VOC task: metrics, the VOC2012 tree, the generated scenes, batching, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, jaccard_score

from torch_clip.tasks.voc import (
    EMBEDDED_CLASSES,
    IGNORE_INDEX,
    VOCTask,
    confusion_matrix,
    generate_scenes,
    miou_from_confusion,
    pixel_accuracy_from_confusion,
)

CPU = torch.device("cpu")


# one intra-op thread (tests/conftest.py): on a shared 2-core machine, busy-waiting OpenMP
# threads of parallel jobs slow each other down by up to 10x
pytestmark = pytest.mark.usefixtures("single_thread")


def collect(task, epoch=0, start=0, **kw):
    return list(task.train_batches(epoch, start, **kw))


def small_task(**kw):
    """A cheap embedded task: few generated scenes, so setup takes well under a second."""
    kw = {"embedded_train_size": 48, "embedded_val_size": 8, "batch_size": 8, **kw}
    return VOCTask(**kw)


# ------------------------------------------------------------------------------------ metrics


def reference_miou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Independent mean IoU: per class on non-ignored pixels, over classes in target or prediction."""
    valid = target != IGNORE_INDEX
    p, t = pred[valid], target[valid]
    ious = []
    for c in range(num_classes):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("num_classes", [2, 5, 21])
def test_metrics_match_numpy_and_sklearn(seed, num_classes):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, size=(3, 17, 23))
    target[rng.random(target.shape) < 0.15] = IGNORE_INDEX
    # correlated prediction; the top class never occurs in the target, only in predictions
    pred = np.where(
        rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes, target.shape)
    )
    pred[pred == IGNORE_INDEX] = 0
    target[target == num_classes - 1] = 0
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), num_classes)
    miou = miou_from_confusion(cm)
    acc = pixel_accuracy_from_confusion(cm)
    assert miou.ndim == 0 and acc.ndim == 0
    valid = target != IGNORE_INDEX
    assert int(cm.sum()) == int(valid.sum())
    assert float(miou) == pytest.approx(reference_miou(pred, target, num_classes), abs=1e-9)
    present = sorted(set(pred[valid].tolist()) | set(target[valid].tolist()))
    sk = jaccard_score(target[valid], pred[valid], labels=present, average="macro")
    assert float(miou) == pytest.approx(sk, abs=1e-9)
    assert float(acc) == pytest.approx(accuracy_score(target[valid], pred[valid]), abs=1e-9)


def test_miou_skips_classes_absent_from_both():
    target = torch.tensor([[0, 0, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 3]])  # class 3 only on an ignored pixel, class 2 nowhere
    cm = confusion_matrix(pred, target, num_classes=4)
    # class 0: 1/2, class 1: 1/2 -> 0.5 (classes 2 and 3 do not count)
    assert float(miou_from_confusion(cm)) == pytest.approx(0.5)
    assert float(pixel_accuracy_from_confusion(cm)) == pytest.approx(2 / 3)
    assert float(miou_from_confusion(torch.zeros(4, 4, dtype=torch.long))) == 0.0


# ---------------------------------------------------------------------------- generated scenes


def test_generated_scenes_are_deterministic_and_well_formed():
    images, masks = generate_scenes(40, 64, seed=3)
    again, masks_again = generate_scenes(40, 64, seed=3)
    other, _ = generate_scenes(40, 64, seed=4)
    assert np.array_equal(images, again) and np.array_equal(masks, masks_again)
    assert not np.array_equal(images, other)
    assert images.shape == (40, 3, 64, 64) and masks.shape == (40, 64, 64)
    assert images.min() >= 0.0 and images.max() <= 1.0
    values = set(np.unique(masks).tolist())
    assert values == {*range(len(EMBEDDED_CLASSES)), IGNORE_INDEX}
    assert 0.01 < np.mean(masks == IGNORE_INDEX) < 0.2  # a thin band, not whole regions
    # a labelled (non-ignored) pixel never touches a pixel of another labelled class
    m = masks.astype(int)
    for a, b in ((m[:, 1:, :], m[:, :-1, :]), (m[:, :, 1:], m[:, :, :-1])):
        both = (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
        assert np.all(a[both] == b[both])
    # shapes are painted on the image: their pixels differ in colour from the background
    for n in range(5):
        shape = (masks[n] > 0) & (masks[n] != IGNORE_INDEX)
        bg = masks[n] == 0
        gap = np.abs(images[n][:, shape].mean(1) - images[n][:, bg].mean(1)).max()
        assert gap > 0.02


@pytest.fixture(scope="module")
def scene_task():
    task = small_task()
    info = task.setup(CPU, seed=0)
    return task, info


def test_embedded_info_and_shapes(scene_task):
    task, info = scene_task
    assert info.embedded and info.data_source.startswith("embedded:")
    assert (info.num_train, info.num_val) == (48, 8)
    x, y = next(iter(task.train_batches(0, seed=0)))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (8, 64, 64) and y.dtype == torch.long
    with torch.no_grad():
        assert task.model(x).shape == (8, len(EMBEDDED_CLASSES), 64, 64)


def test_embedded_data_depends_on_data_seed_not_run_seed(scene_task):
    task, _ = scene_task
    same = small_task()
    same.setup(CPU, seed=9)
    other = small_task(data_seed=1)
    other.setup(CPU, seed=0)
    assert torch.equal(task._train_tensors[1], same._train_tensors[1])
    assert not torch.equal(task._train_tensors[1], other._train_tensors[1])


def test_train_batches_deterministic_and_resumable(scene_task):
    task, _ = scene_task
    assert task.steps_per_epoch() == 6
    a = collect(task, epoch=1, seed=2)
    b = collect(task, epoch=1, seed=2)
    assert len(a) == 6
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][1], collect(task, epoch=2, seed=2)[0][1])
    resumed = collect(task, epoch=1, start=4, seed=2)
    assert len(resumed) == 2
    assert all(torch.equal(p[1], q[1]) for p, q in zip(resumed, a[4:]))
    assert collect(task, epoch=1, start=6, seed=2) == []


def test_two_ranks_cover_the_global_batch(scene_task):
    task, _ = scene_task
    whole = collect(task, seed=1)
    r0 = collect(task, seed=1, rank=0, world_size=2)
    r1 = collect(task, seed=1, rank=1, world_size=2)
    for (x0, y0), (x1, y1), (x, y) in zip(r0, r1, whole, strict=True):
        assert x0.shape[0] == x1.shape[0] == 4
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_loss_ignores_255_pixels(scene_task):
    task, _ = scene_task
    x, y = next(iter(task.train_batches(0, seed=0)))
    task.model.eval()
    with torch.no_grad():
        loss, metrics = task.loss((x, y))
        logits = task.model(x)
    task.model.train()
    logp = torch.log_softmax(logits, 1).permute(0, 2, 3, 1)[y != IGNORE_INDEX]
    expected = -logp.gather(1, y[y != IGNORE_INDEX][:, None]).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert metrics["miou"].ndim == 0 and metrics["pixel_accuracy"].ndim == 0


def test_evaluate_matches_independent_computation(scene_task):
    task, _ = scene_task
    task.model.train()
    got = task.evaluate()
    assert task.model.training
    x, y = task._val_tensors
    task.model.eval()
    with torch.no_grad():
        pred = task.model(x).argmax(1).numpy()
    task.model.train()
    target = y.numpy()
    assert got["miou"] == pytest.approx(reference_miou(pred, target, len(EMBEDDED_CLASSES)))
    valid = target != IGNORE_INDEX
    assert got["pixel_accuracy"] == pytest.approx(accuracy_score(target[valid], pred[valid]))


def test_sgd_steps_reduce_loss_on_fixed_batch():
    task = small_task(batch_size=4, embedded_train_size=8, image_size=32)
    task.setup(CPU, seed=0)
    batch = next(iter(task.train_batches(0, seed=0)))
    opt = torch.optim.SGD(task.model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss, _ = task.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


# ------------------------------------------------------------------------- miniature VOC2012


def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved class ids), as in the official devkit."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def make_voc(root, sizes=((50, 37), (45, 60), (64, 48), (40, 40), (70, 52)), val=2):
    """``root/VOCdevkit/VOC2012``: JPEGs, palette masks (left half class 15, 255 border), lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = []
    for i, (w, h) in enumerate(sizes):
        name = f"2007_{i:06d}"
        ids.append(name)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[:, : w // 2] = 15  # "person"
        mask[:, w // 2 - 2 : w // 2 + 2] = IGNORE_INDEX  # void band between the classes
        mask[:3, :] = mask[-3:, :] = IGNORE_INDEX
        png = Image.frombytes("P", (w, h), mask.tobytes())
        png.putpalette(voc_palette())
        png.save(voc / "SegmentationClass" / f"{name}.png")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(ids[:-val]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[-val:]) + "\n")
    return root


@pytest.fixture
def voc_root(tmp_path):
    return make_voc(tmp_path / "voc")


def test_voc_tree_loading(voc_root):
    task = VOCTask(data_root=str(voc_root), image_size=64, batch_size=2, eval_batch_size=2)
    info = task.setup(CPU, seed=0)
    assert not info.embedded and "VOC2012" in info.data_source
    assert (info.num_train, info.num_val) == (3, 2)
    assert task.num_classes == 21
    batches = collect(task, seed=0)
    assert len(batches) == task.steps_per_epoch() == 1
    x, y = batches[0]
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (2, 64, 64) and y.dtype == torch.long
    assert x.shape[-1] % 32 == 0
    # nearest resizing keeps the palette ids: only 0, 15 and the 255 ignore label survive
    assert set(torch.unique(y).tolist()) == {0, 15, IGNORE_INDEX}
    xv, yv = next(iter(task.val_batches()))
    assert xv.shape == (2, 3, 64, 64)
    assert set(torch.unique(yv).tolist()) == {0, 15, IGNORE_INDEX}
    assert torch.all(yv[:, 20:40, :20] == 15) and torch.all(yv[:, 20:40, -20:] == 0)
    assert torch.all(yv[:, 0, :] == IGNORE_INDEX)
    result = task.evaluate()
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["pixel_accuracy"] <= 1.0


def test_voc_augmentation_is_reproducible(voc_root):
    task = VOCTask(data_root=str(voc_root), image_size=32, batch_size=3)
    task.setup(CPU, seed=0)
    a = collect(task, epoch=0, seed=5)
    torch.manual_seed(1)
    b = collect(task, epoch=0, seed=5)
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])
    # column 5 lies in the left (class 15) half unless the pair was flipped: both must occur
    left = torch.cat([collect(task, epoch=e, seed=5)[0][1][:, 16, 5] for e in range(8)])
    assert set(left.tolist()) == {0, 15}


def test_voc2012_dir_itself_is_accepted(voc_root):
    task = VOCTask(data_root=str(voc_root / "VOCdevkit" / "VOC2012"), image_size=32)
    assert task.setup(CPU, seed=0).num_train == 3


def test_missing_voc_path_raises_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        VOCTask(data_root=str(missing), image_size=64).setup(CPU, seed=0)
    assert str(missing) in str(err.value) and "SegmentationClass" in str(err.value)


def test_missing_files_in_voc_tree(tmp_path):
    for case in ("mask", "list"):
        root = make_voc(tmp_path / case)
        voc = root / "VOCdevkit" / "VOC2012"
        if case == "mask":
            (voc / "SegmentationClass" / "2007_000000.png").unlink()
        else:
            (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
        needle = "2007_000000.png" if case == "mask" else r"val\.txt"
        with pytest.raises(FileNotFoundError, match=needle):
            VOCTask(data_root=str(root), image_size=64).setup(CPU, seed=0)


def test_rgb_masks_and_unknown_ids_are_rejected(voc_root):
    seg = voc_root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    task = VOCTask(data_root=str(voc_root), image_size=32, eval_batch_size=2)
    task.setup(CPU, seed=0)
    Image.open(seg / "2007_000003.png").convert("RGB").save(seg / "2007_000003.png")
    with pytest.raises(ValueError, match="palette"):
        task.evaluate()
    bad = np.full((40, 40), 30, dtype=np.uint8)
    Image.fromarray(bad).save(seg / "2007_000003.png")
    with pytest.raises(ValueError, match="outside"):
        task.evaluate()


# ------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["voc", "voc_full"])
def test_yaml_configs_instantiate(name, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "task" / f"{name}.yaml")
    assert cfg.trainer.max_steps > cfg.trainer.eval_every > 0
    if name.endswith("_full"):
        assert OmegaConf.is_missing(cfg.task, "data_root")  # the real dataset is mandatory
        cfg.task.data_root = str(tmp_path / "missing")
    task = instantiate(cfg.task)
    assert isinstance(task, VOCTask)
    assert task.image_size % 32 == 0
    if name.endswith("_full"):
        assert task.num_classes == 21 and task.image_size >= 320
        with pytest.raises(FileNotFoundError, match="missing"):
            task.setup(CPU, seed=0)
    else:
        assert task.data_root is None and task.image_size == 64
        assert task.num_classes == len(EMBEDDED_CLASSES)
