"""Every task refuses a bad config value with one message: ``Invalid task.<key>: <value!r>;
expected <what is accepted>``, the key spelled as on the command line (``task.batch_size=0``)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets.voc import DATASET_YEAR_DICT

from clip_core._validation import check_choice, check_int, check_number, check_path

TOY, COLA, IMAGENET, VOC, REDDIT = (
    "torch_clip.tasks.toy.ToyRegressionTask",
    "torch_clip.tasks.cola.ColaTask",
    "torch_clip.tasks.imagenet.ImageNetTask",
    "torch_clip.tasks.voc.VOCTask",
    "torch_clip.tasks.reddit.RedditTask",
)
# (task class, constructor arguments, the key and value the message must name, what is accepted)
CASES = [
    (TOY, {"dim": 0}, "dim", 0, "an integer >= 1"),
    (TOY, {"batch_size": True}, "batch_size", True, "an integer >= 1"),
    (TOY, {"num_train": 2.0}, "num_train", 2.0, "an integer >= 1"),
    (TOY, {"noise_df": float("nan")}, "noise_df", float("nan"), "a value > 0"),
    (COLA, {"batch_size": 0}, "batch_size", 0, "an integer >= 1"),
    (COLA, {"max_length": 1000}, "max_length", 1000, "an integer in [4, 512]"),
    (COLA, {"max_length": True}, "max_length", True, "an integer in [4, 512]"),
    (COLA, {"embedded_dev_size": 0}, "embedded_dev_size", 0, "an integer >= 1"),
    (COLA, {"corpus_seed": -1}, "corpus_seed", -1, "null or an integer >= 0"),
    (COLA, {"dropout": 1.0}, "dropout", 1.0, "null or a value in [0, 1)"),
    (COLA, {"dropout": "0.1"}, "dropout", "0.1", "null or a value in [0, 1)"),
    (COLA, {"pooling": "max"}, "pooling", "max", "one of cls, mean"),
    (
        COLA,
        {"data_root": 5},
        "data_root",
        5,
        "null or a directory with train.tsv and dev.tsv, or 'hub' (datasets glue/cola)",
    ),
    (
        COLA,
        {"model_name_or_path": ""},
        "model_name_or_path",
        "",
        "null or a local model directory or a hub id (e.g. bert-base-uncased)",
    ),
    (IMAGENET, {"batch_size": 0}, "batch_size", 0, "an integer >= 1"),
    (IMAGENET, {"eval_batch_size": None}, "eval_batch_size", None, "an integer >= 1"),
    (IMAGENET, {"image_size": 4}, "image_size", 4, "null or an integer >= 8"),
    (IMAGENET, {"num_workers": -1}, "num_workers", -1, "an integer >= 0"),
    (IMAGENET, {"max_val_items": 0}, "max_val_items", 0, "null or an integer >= 1"),
    (IMAGENET, {"data_root": 3}, "data_root", 3, "null or a path"),
    (
        IMAGENET,
        {"num_classes": 5},
        "num_classes",
        5,
        "null or 10 with the embedded digits data (or set task.data_root)",
    ),
    (VOC, {"image_size": 50}, "image_size", 50, "a multiple of 32 (e.g. 64)"),
    (VOC, {"image_size": 16}, "image_size", 16, "null or an integer >= 32"),
    (VOC, {"batch_size": -2}, "batch_size", -2, "an integer >= 1"),
    (VOC, {"year": "1999"}, "year", "1999", f"one of {', '.join(DATASET_YEAR_DICT)}"),
    (VOC, {"train_split": "test"}, "train_split", "test", "one of train, val, trainval"),
    (VOC, {"val_split": None}, "val_split", None, "one of train, val, trainval"),
    (VOC, {"data_seed": -1}, "data_seed", -1, "an integer >= 0"),
    (VOC, {"encoder_name": ""}, "encoder_name", "", "an smp encoder name (e.g. resnet18)"),
    (
        VOC,
        {"num_classes": 21},
        "num_classes",
        21,
        "null or 5 with the embedded scenes (background, disk, rectangle, triangle, ring; "
        "or set task.data_root)",
    ),
    # class ids must stay below the ignore id 255
    (
        VOC,
        {"data_root": "/x", "num_classes": 300},
        "num_classes",
        300,
        "null or an integer in [2, 255]",
    ),
    (REDDIT, {"sampler": "cluster"}, "sampler", "cluster", "one of auto, neighbor, subgraph"),
    (REDDIT, {"batch_size": 2.5}, "batch_size", 2.5, "an integer >= 1"),
    (REDDIT, {"hidden_channels": -1}, "hidden_channels", -1, "an integer >= 1"),
    (REDDIT, {"num_layers": 0}, "num_layers", 0, "an integer >= 1"),
    (REDDIT, {"dropout": 1.0}, "dropout", 1.0, "a value in [0, 1)"),
    (
        REDDIT,
        {"aggr": "max"},
        "aggr",
        "max",
        "one of mean, add (linear aggregations, needed for sparse layer-wise inference)",
    ),
    (
        REDDIT,
        {"num_neighbors": [10, 0]},
        "num_neighbors",
        [10, 0],
        "a list of integers > 0 or -1 (all neighbours)",
    ),
    (
        REDDIT,
        {"num_neighbors": 10},
        "num_neighbors",
        10,
        "a list of integers > 0 or -1 (all neighbours)",
    ),
    (REDDIT, {"p_in": 1.5}, "p_in", 1.5, "a value in [0, 1]"),
    (REDDIT, {"num_classes": 1}, "num_classes", 1, "an integer >= 2"),
    (
        REDDIT,
        {"num_nodes": 15, "num_classes": 10},
        "num_nodes",
        15,
        "an integer >= 2 * task.num_classes = 20",
    ),
    (REDDIT, {"feature_noise": -1}, "feature_noise", -1, "a value >= 0"),
    (REDDIT, {"train_fraction": 0.0}, "train_fraction", 0.0, "a value in (0, 1]"),
    (
        REDDIT,
        {"train_fraction": 0.9, "val_fraction": 0.2},
        "val_fraction",
        0.2,
        "a value <= 1 - task.train_fraction = 0.1",
    ),
    (REDDIT, {"data_root": ""}, "data_root", "", "null or a path"),
    (REDDIT, {"data_seed": -1}, "data_seed", -1, "an integer >= 0"),
]


def _task_class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    ("task", "kwargs", "key", "value", "expected"),
    CASES,
    ids=[f"{t.split('.')[1]}-{k}={v!r}" for t, _, k, v, _ in CASES],
)
def test_bad_value_names_key_value_and_what_is_accepted(task, kwargs, key, value, expected):
    with pytest.raises(ValueError) as exc:
        _task_class(task)(**kwargs)
    assert str(exc.value) == f"Invalid task.{key}: {value!r}; expected {expected}"


@pytest.mark.parametrize("task", [TOY, COLA, IMAGENET, VOC, REDDIT])
def test_default_values_pass(task):
    """The checks above are not stricter than the shipped defaults."""
    _task_class(task)()


# -- the helpers themselves (library arguments are covered in tests/clip_core/test_optimizers.py) ---------
@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (
            lambda v: check_int("lr_steps", v, 1, 5),
            6,
            "Invalid lr_steps: 6; expected an integer in [1, 5]",
        ),
        (lambda v: check_int("n", v, high=5), 6, "Invalid n: 6; expected an integer <= 5"),
        (lambda v: check_int("n", v), "3", "Invalid n: '3'; expected an integer"),
        # a YAML key spells None as YAML does; a Python argument as Python does
        (
            lambda v: check_int("task.n", v, 1, optional=True),
            0,
            "Invalid task.n: 0; expected null or an integer >= 1",
        ),
        (
            lambda v: check_int("n", v, 1, optional=True),
            0,
            "Invalid n: 0; expected None or an integer >= 1",
        ),
        (
            lambda v: check_number("x", v, high=1, high_open=True),
            1,
            "Invalid x: 1; expected a value < 1",
        ),
        (lambda v: check_number("x", v, 0), True, "Invalid x: True; expected a value >= 0"),
        (
            lambda v: check_choice("m", v, ("a", "b"), optional=True),
            "c",
            "Invalid m: 'c'; expected None or one of a, b",
        ),
        (lambda v: check_path("p", v), None, "Invalid p: None; expected a path"),
        (lambda v: check_path("p", v), "  ", "Invalid p: '  '; expected a path"),
    ],
)
def test_helpers_share_one_format(check, value, message):
    with pytest.raises(ValueError) as exc:
        check(value)
    assert str(exc.value) == message


def test_helpers_return_what_they_accept():
    assert check_int("n", np.int64(3), 1) == 3 and type(check_int("n", np.int64(3), 1)) is int
    assert check_number("x", 0.5, 0, 1) == 0.5
    assert check_choice("m", None, ("a",), optional=True) is None
    assert check_path("p", Path("/tmp/x")) == "/tmp/x"
