"""task=lm: its corpus and split, the model's causality, its metrics against NumPy, loss spikes,
bad input, resume, and a short default-shaped run that beats a byte-unigram model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from tests.suite_helpers import assert_same_training, find_run_dir, run_train
from torch_clip.tasks import text_corpus
from torch_clip.tasks.lm import DecoderLM, LanguageModelTask, loss_spikes

CPU = torch.device("cpu")
TINY = dict(context=16, width=32, num_layers=1, num_heads=2, batch_size=4, max_val_blocks=8)


def write_texts(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        words = rng.choice(["the", "cat", "sat", "on", "a", "mat", "\n"], size=size)
        (folder / f"doc{i}.txt").write_text(" ".join(words))
    return folder


def test_split_takes_every_twentieth_chunk_as_validation():
    text = np.random.default_rng(1).integers(0, 256, 50 * text_corpus.SPLIT_CHUNK + 123)
    data = text.astype(np.uint8).tobytes()
    train, val = text_corpus.split_text(data)
    chunk = np.arange(len(data)) // text_corpus.SPLIT_CHUNK  # each byte's chunk, by NumPy
    is_val = chunk % 20 == 19
    arr = np.frombuffer(data, dtype=np.uint8)
    assert val == arr[is_val].tobytes() and train == arr[~is_val].tobytes()


def test_embedded_corpus_is_the_stdlib_and_pydoc_topics():
    from pydoc_data.topics import topics

    corpus = text_corpus.load_corpus()
    docs = text_corpus.stdlib_documents()
    names = [n for n, _ in docs]
    assert "os.py" in names and "json/decoder.py" in names
    assert not any(n.startswith(("test/", "idlelib/")) for n in names)
    assert sum(n.startswith("pydoc_data.topics/") for n in names) == len(topics)
    total = sum(len(d) for _, d in docs) + 2 * (len(docs) - 1)  # joined by blank lines
    assert len(corpus.train) + len(corpus.val) == total
    assert 0.04 < len(corpus.val) / total < 0.06
    assert topics["assert"].encode() in b"".join(d for _, d in docs)


def test_data_root_folder_and_file_and_content_hash(tmp_path):
    folder = write_texts(tmp_path / "texts", [40_000, 30_000, 30_000])
    a = text_corpus.load_corpus(folder)
    assert a.num_documents == 3 and a.val and a.train
    one = tmp_path / "one.txt"
    one.write_bytes((folder / "doc0.txt").read_bytes() * 3)
    b = text_corpus.load_corpus(one)
    assert b.num_documents == 1 and b.sha256 != a.sha256
    (folder / "doc1.txt").write_text((folder / "doc1.txt").read_text() + "x")
    assert text_corpus.load_corpus(folder).sha256 != a.sha256  # one byte changes the hash


@pytest.mark.parametrize(
    "root, message",
    [("missing", "neither a text file nor a folder"), ("empty", "holds no .txt files")],
)
def test_data_root_errors_name_the_value(tmp_path, root, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=message) as info:
        text_corpus.load_corpus(tmp_path / root)
    assert str(tmp_path / root) in str(info.value)


def test_too_small_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("tiny")
    with pytest.raises(ValueError, match="at least"):
        text_corpus.load_corpus(tmp_path)


def test_bad_settings_are_clear_errors():
    with pytest.raises(
        ValueError, match=re.escape("task.width: 30; expected a multiple of task.num_heads")
    ):
        LanguageModelTask(width=30, num_heads=4)
    with pytest.raises(ValueError, match=re.escape("task.context")):
        LanguageModelTask(context=0)
    task = LanguageModelTask(tokenizer="/no/such/tokenizer", **TINY)
    with pytest.raises(FileNotFoundError, match="'/no/such/tokenizer' is not a directory"):
        task.setup(CPU, 0)


def test_model_is_causal():
    torch.manual_seed(0)
    model = DecoderLM(vocab=50, context=12, width=16, layers=2, heads=2, dropout=0.0).eval()
    x = torch.randint(0, 50, (2, 12))
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 50
    a, b = model(x), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])  # positions before 7 never see it
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_output_layer_is_tied_to_the_embedding():
    model = DecoderLM(vocab=300, context=8, width=16, layers=1, heads=2, dropout=0.0)
    names = dict(model.named_parameters())
    assert "tok.weight" in names and not any(n.startswith("head") for n in names)
    total = sum(p.numel() for p in model.parameters())
    block = 4 * 16 * 16 + 4 * 16 + 8 * 16 * 16 + 5 * 16 + 4 * 16  # attention, MLP, norms
    assert total == 300 * 16 + 8 * 16 + block + 2 * 16


def numpy_bits_per_byte(task) -> float:
    """Validation bits per byte by NumPy: log-softmax of the model's logits at every target."""
    with torch.no_grad():
        logits = task.model.eval()(task.val_blocks[:, :-1]).double().numpy()
    targets = task.val_blocks[:, 1:].numpy()
    top = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    nats = (log_z - picked).mean()
    return nats / math.log(2) / task.val_bytes_per_token


def test_bits_per_byte_and_perplexity_against_numpy():
    task = LanguageModelTask(**TINY)
    task.setup(CPU, 0)
    metrics = task.evaluate()
    assert metrics["bits_per_byte"] == pytest.approx(numpy_bits_per_byte(task), rel=1e-6)
    assert task.val_bytes_per_token == 1.0
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["neg_bits_per_byte"] == -metrics["bits_per_byte"]


def test_minilm_tokenizer_bits_per_byte_use_the_bytes_per_token():
    from transformers import AutoTokenizer

    from torch_clip.tasks.cola import packaged_model_dir

    task = LanguageModelTask(tokenizer="minilm", **TINY)
    info = task.setup(CPU, 0)
    val = text_corpus.load_corpus().val.decode("utf-8", errors="replace")
    reference = AutoTokenizer.from_pretrained(str(packaged_model_dir()))
    reference.model_max_length = 1 << 62
    lines = val.splitlines(keepends=True)
    count = sum(len(reference("".join(lines[i : i + 200]), add_special_tokens=False)["input_ids"])
                for i in range(0, len(lines), 200))  # fmt: skip
    assert info.extra["val_tokens"] == count and info.extra["vocab_size"] == 30522
    assert task.val_bytes_per_token == pytest.approx(len(val.encode()) / count, rel=1e-3)
    assert task.evaluate()["bits_per_byte"] == pytest.approx(numpy_bits_per_byte(task), rel=1e-6)


def test_train_batches_are_consecutive_text_and_resume_at_start():
    task = LanguageModelTask(**TINY)
    task.setup(CPU, 0)
    train = np.frombuffer(text_corpus.load_corpus().train, dtype=np.uint8)
    batches = list(task.train_batches(2, 0, seed=5))[:6]
    for row in batches[3]:
        start = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(train, 17)[::16]
                               .__eq__(row.numpy()).all(1))  # fmt: skip
        assert start.size >= 1  # the row is one block of the training text
    again = list(task.train_batches(2, 3, seed=5))[:3]
    assert all(torch.equal(a, b) for a, b in zip(batches[3:], again))
    halves = [next(task.train_batches(2, 0, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), batches[0])


def test_loss_spikes_against_a_pandas_rolling_median():
    rng = np.random.default_rng(0)
    losses = 3.0 * np.exp(-np.arange(400) / 150) + 1 + 0.05 * rng.standard_normal(400)
    losses[[120, 121, 300]] *= 2.2
    losses[200] *= 1.3  # not a spike
    median = pd.Series(losses).shift(1).rolling(50).median()
    expected = int((losses > 1.5 * median).sum())
    assert loss_spikes(losses) == expected == 3
    losses[250] = np.nan
    assert loss_spikes(losses) == 4  # a non-finite loss is a spike


def test_default_recipe_shrunk_beats_a_byte_unigram_model(tmp_path):
    """A short run of the default recipe at a small size; the unigram baseline is the entropy of
    the validation split's own byte frequencies (the best any unigram model can do on it)."""
    over = ["task=lm", "task.width=64", "task.num_layers=2", "task.num_heads=2",
            "task.context=64", "trainer.max_steps=150", "trainer.eval_every=150",
            "trainer.device=cpu", "label=lm"]  # fmt: skip
    proc = run_train(tmp_path, *over)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "val_bits_per_byte" in proc.stdout
    summary = json.loads((find_run_dir(tmp_path, "lm", task="lm") / "summary.json").read_text())
    val = np.frombuffer(text_corpus.load_corpus().val, dtype=np.uint8)
    p = np.bincount(val, minlength=256) / val.size
    unigram = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    assert summary["final"]["val_bits_per_byte"] < unigram - 0.5
    assert summary["task_extra"]["corpus_sha256"] == text_corpus.load_corpus().sha256


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    over = ["task=lm", *(f"task.{k}={v}" for k, v in TINY.items()), "trainer.eval_every=3",
            "trainer.log_every=3", "trainer.checkpoint_every=3", "trainer.device=cpu",
            "label=lm", "optimizer=quadratic_stoch_auto"]  # fmt: skip
    whole = run_train(tmp_path / "whole", *over, "trainer.max_steps=6")
    assert whole.returncode == 0, whole.stderr[-2000:]
    first = run_train(tmp_path / "split", *over, "trainer.max_steps=3")
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_train(tmp_path / "split", *over, "trainer.max_steps=6", "trainer.extend=true")
    assert second.returncode == 0 and "resuming from" in second.stdout
    assert_same_training(find_run_dir(tmp_path / "whole", "lm", task="lm"),
                         find_run_dir(tmp_path / "split", "lm", task="lm"), atol=0)  # fmt: skip
