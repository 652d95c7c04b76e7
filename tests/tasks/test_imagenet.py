"""Tests for the ImageNet task: metric, ImageFolder loading, the embedded digits, batching, training."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score

from torch_clip.tasks.imagenet import LAYOUT, ImageNetTask, top1_accuracy

CPU = torch.device("cpu")


# one intra-op thread (tests/conftest.py): on a shared 2-core machine, busy-waiting OpenMP
# threads of parallel jobs slow each other down by up to 10x
pytestmark = pytest.mark.usefixtures("single_thread")


def collect(task, epoch=0, start=0, **kw):
    return list(task.train_batches(epoch, start, **kw))


# ------------------------------------------------------------------------------------- metric


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top1_accuracy_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(257, 7)).astype(np.float32)
    target = rng.integers(0, 7, size=257)
    got = top1_accuracy(torch.from_numpy(logits), torch.from_numpy(target))
    assert got.ndim == 0
    assert float(got) == pytest.approx(accuracy_score(target, logits.argmax(1)), abs=1e-6)


# --------------------------------------------------------------------------- embedded digits


@pytest.fixture(scope="module")
def digits_task():
    task = ImageNetTask(batch_size=16, eval_batch_size=128)
    info = task.setup(CPU, seed=0)
    return task, info


def test_embedded_info_and_split(digits_task):
    task, info = digits_task
    assert info.embedded
    assert info.data_source.startswith("embedded:") and "digits" in info.data_source
    assert "ImageNet proxy" in info.data_source
    assert (info.num_train, info.num_val) == (1500, 297)
    x_tr, y_tr = task._train_tensors
    x_val, y_val = task._val_tensors
    assert x_tr.shape == (1500, 3, 32, 32) and x_val.shape == (297, 3, 32, 32)
    # every digit is in exactly one split: compare against sklearn's own images
    raw = load_digits()
    assert sorted(np.concatenate([y_tr.numpy(), y_val.numpy()]).tolist()) == sorted(
        raw.target.tolist()
    )
    assert set(y_val.tolist()) == set(range(10))  # stratified: all classes validated
    assert torch.equal(x_tr[:, 0], x_tr[:, 2])  # grey repeated to 3 channels


def test_embedded_split_is_fixed_across_seeds(digits_task):
    task, _ = digits_task
    other = ImageNetTask(batch_size=16)
    other.setup(CPU, seed=5)
    assert torch.equal(task._val_tensors[1], other._val_tensors[1])
    assert torch.allclose(task._val_tensors[0], other._val_tensors[0])


def test_embedded_image_size_option():
    task = ImageNetTask(image_size=16, batch_size=8)
    task.setup(CPU, seed=0)
    x, y = next(iter(task.train_batches(0, seed=0)))
    assert x.shape == (8, 3, 16, 16) and y.shape == (8,) and y.dtype == torch.long


def test_train_batches_deterministic_and_resumable(digits_task):
    task, _ = digits_task
    assert task.steps_per_epoch() == 1500 // 16
    a = collect(task, epoch=1, seed=3)
    b = collect(task, epoch=1, seed=3)
    assert len(a) == task.steps_per_epoch()
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = collect(task, epoch=2, seed=3)
    assert not torch.equal(a[0][1], c[0][1])  # another epoch, another order
    resumed = collect(task, epoch=1, start=5, seed=3)
    assert len(resumed) == len(a) - 5
    assert all(torch.equal(r[0], s[0]) for r, s in zip(resumed, a[5:]))


def test_two_ranks_cover_the_global_batch(digits_task):
    task, _ = digits_task
    whole = collect(task, epoch=0, seed=1)
    r0 = collect(task, epoch=0, seed=1, rank=0, world_size=2)
    r1 = collect(task, epoch=0, seed=1, rank=1, world_size=2)
    assert len(r0) == len(r1) == len(whole)
    for (x0, y0), (x1, y1), (x, y) in zip(r0, r1, whole):
        assert x0.shape[0] == x1.shape[0] == 8
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_evaluate_matches_manual_pass_and_restores_mode(digits_task):
    task, _ = digits_task
    task.model.train()
    got = task.evaluate()
    assert task.model.training
    x, y = task._val_tensors
    task.model.eval()
    with torch.no_grad():
        logits = task.model(x)
    task.model.train()
    assert got["accuracy"] == pytest.approx(accuracy_score(y.numpy(), logits.argmax(1).numpy()))
    assert got["loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-4
    )


def test_sgd_steps_reduce_loss_on_fixed_batch():
    task = ImageNetTask(batch_size=16)
    task.setup(CPU, seed=0)
    batch = next(iter(task.train_batches(0, seed=0)))
    opt = torch.optim.SGD(task.model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss, metrics = task.loss(batch)
        assert loss.ndim == 0 and metrics["accuracy"].ndim == 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_model_init_depends_on_seed_only():
    a, b, c = ImageNetTask(), ImageNetTask(), ImageNetTask()
    a.setup(CPU, seed=1)
    torch.manual_seed(123)  # the global RNG state must not matter
    b.setup(CPU, seed=1)
    c.setup(CPU, seed=2)
    wa, wb, wc = (t.model.conv1.weight for t in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


# ----------------------------------------------------------------------------- argument checks


def test_world_size_must_divide_batch(digits_task):
    task, _ = digits_task
    with pytest.raises(ValueError, match="divisible"):
        next(iter(task.train_batches(0, seed=0, rank=0, world_size=3)))


# ------------------------------------------------------------------------ real ImageFolder tree

CLASSES = ("n01440764", "n01443537", "n02102040")


def make_imagefolder(root, per_class=(5, 2)):
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for c, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
                pixels = np.full((h, w, 3), 60 * c, dtype=np.uint8)
                pixels += rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
                ext = "JPEG" if i % 2 == 0 else "png"
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.{ext}")
    return root


@pytest.fixture
def imagefolder(tmp_path):
    return make_imagefolder(tmp_path / "imagenet")


def test_imagefolder_loading(imagefolder):
    task = ImageNetTask(data_root=str(imagefolder), image_size=32, batch_size=4, eval_batch_size=4)
    info = task.setup(CPU, seed=0)
    assert not info.embedded and str(imagefolder) in info.data_source
    assert (info.num_train, info.num_val) == (15, 6)
    assert task.num_classes == 3 and task.model.fc.out_features == 3
    batches = collect(task, epoch=0, seed=0)
    assert len(batches) == task.steps_per_epoch() == 15 // 4
    x, y = batches[0]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.long and set(y.tolist()) <= {0, 1, 2}
    result = task.evaluate()
    assert 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["loss"])


def test_imagefolder_default_size_is_224(imagefolder):
    task = ImageNetTask(data_root=str(imagefolder), batch_size=2, eval_batch_size=3)
    task.setup(CPU, seed=0)
    assert task.image_size == 224
    x, _ = next(iter(task.val_batches()))
    assert x.shape == (3, 3, 224, 224)


def test_imagefolder_augmentation_is_a_function_of_seed_and_epoch(imagefolder):
    task = ImageNetTask(data_root=str(imagefolder), image_size=32, batch_size=4)
    task.setup(CPU, seed=0)
    a = collect(task, epoch=0, seed=7)
    torch.manual_seed(999)  # global RNG must not leak into the crops
    b = collect(task, epoch=0, seed=7)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    resumed = collect(task, epoch=0, start=1, seed=7)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(resumed, a[1:]))
    task.num_workers = 2  # worker processes must produce the very same crops
    parallel = collect(task, epoch=0, seed=7)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(parallel, a))


def test_max_val_items_limits_evaluation(imagefolder):
    task = ImageNetTask(data_root=str(imagefolder), image_size=32, max_val_items=4)
    info = task.setup(CPU, seed=0)
    assert info.num_val == 4


def test_missing_path_raises_clear_error(tmp_path):
    missing = tmp_path / "nope"
    task = ImageNetTask(data_root=str(missing))
    with pytest.raises(FileNotFoundError) as err:
        task.setup(CPU, seed=0)
    assert str(missing) in str(err.value) and "train/<wnid>" in str(err.value)
    assert LAYOUT in str(err.value)


def test_empty_or_partial_tree_raises(tmp_path):
    root = tmp_path / "imagenet"
    (root / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val"):
        ImageNetTask(data_root=str(root)).setup(CPU, seed=0)
    (root / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="no usable images"):
        ImageNetTask(data_root=str(root)).setup(CPU, seed=0)


def test_mismatched_classes_and_num_classes(tmp_path):
    root = make_imagefolder(tmp_path / "imagenet", per_class=(1, 1))
    expected = f"Invalid task.num_classes: 1000; expected null or {len(CLASSES)}, the class folders"
    with pytest.raises(ValueError, match=re.escape(expected)):
        ImageNetTask(data_root=str(root), num_classes=1000).setup(CPU, seed=0)
    extra = root / "val" / "n09999999"
    extra.mkdir()
    Image.new("RGB", (8, 8)).save(extra / "x.png")
    with pytest.raises(ValueError, match="different class folders"):
        ImageNetTask(data_root=str(root)).setup(CPU, seed=0)


# ------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["imagenet", "imagenet_full"])
def test_yaml_configs_instantiate(name, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "task" / f"{name}.yaml")
    assert cfg.trainer.max_steps > cfg.trainer.eval_every > 0
    if name.endswith("_full"):
        assert OmegaConf.is_missing(cfg.task, "data_root")  # the real dataset is mandatory
        cfg.task.data_root = str(tmp_path / "missing")
    task = instantiate(cfg.task)
    assert isinstance(task, ImageNetTask)
    if name.endswith("_full"):
        assert (task.image_size, task.batch_size) == (224, 256)
        with pytest.raises(FileNotFoundError, match="missing"):
            task.setup(CPU, seed=0)
    else:
        assert task.data_root is None and task.image_size == 32


def test_an_unreadable_jpeg_is_one_line_naming_the_file(imagefolder):
    broken = imagefolder / "train" / CLASSES[0] / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    task = ImageNetTask(data_root=str(imagefolder), image_size=32, batch_size=16)
    task.setup(CPU, seed=0)
    with pytest.raises(ValueError, match="cannot be read") as err:
        collect(task, epoch=0, seed=0)
    assert str(broken) in str(err.value) and "\n" not in str(err.value)
