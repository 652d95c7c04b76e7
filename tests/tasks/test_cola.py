"""Tests for the CoLA task: metrics, TSV loading, the embedded corpus, batching and the model."""

from __future__ import annotations

import copy
import itertools
import os
import socket
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub are imported


import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, matthews_corrcoef

from torch_clip.tasks.cola import (
    ColaTask,
    accuracy,
    load_cola_dir,
    load_model_and_tokenizer,
    read_cola_tsv,
)
from torch_clip.tasks.cola import matthews_corrcoef as torch_mcc
from torch_clip.tasks.cola_corpus import CORRUPTIONS, generate_corpus

# ------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("n", [1, 7, 32, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.filterwarnings("ignore:A single label was found")
def test_metrics_match_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 2, n))  # correlated, not identical
    got = torch_mcc(torch.from_numpy(p), torch.from_numpy(y))
    assert got.ndim == 0
    assert float(got) == pytest.approx(matthews_corrcoef(y, p), abs=1e-6)
    assert float(accuracy(torch.from_numpy(p), torch.from_numpy(y))) == pytest.approx(
        accuracy_score(y, p), abs=1e-6
    )


@pytest.mark.parametrize(
    ("y", "p"),
    [
        ([1, 1, 1, 1], [1, 1, 1, 1]),  # everything one class
        ([0, 0, 0], [0, 0, 0]),
        ([1, 0, 1, 0], [1, 1, 1, 1]),  # constant prediction (the usual early-training state)
        ([1, 1, 1], [0, 1, 0]),  # constant labels
        ([1, 0, 1, 0], [0, 1, 0, 1]),  # perfectly wrong: -1
    ],
)
@pytest.mark.filterwarnings("ignore:A single label was found")
def test_mcc_degenerate_cases(y, p):
    got = float(torch_mcc(torch.tensor(p), torch.tensor(y)))
    assert not np.isnan(got)
    assert got == pytest.approx(matthews_corrcoef(y, p), abs=1e-6)


# ----------------------------------------------------------------------------------- TSV files


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_tsv_two_and_four_column_layouts(tmp_path):
    _write(tmp_path / "train.tsv", ["the cat sat\t1", "cat the sat\t0", "", "who left ?\t1"])
    _write(
        tmp_path / "dev.tsv",
        ["gj04\t1\t\tOur friends won't buy this.", "gj04\t0\t*\tThe more we study verbs."],
    )
    train, dev, layouts = load_cola_dir(tmp_path)
    assert train == [("the cat sat", 1), ("cat the sat", 0), ("who left ?", 1)]
    assert dev == [("Our friends won't buy this.", 1), ("The more we study verbs.", 0)]
    assert layouts == {"train": "2-column", "dev": "glue-4-column"}


@pytest.mark.parametrize(
    ("lines", "bad_line", "message"),
    [
        (["a b\t1", "c d\t1\textra"], 2, "expected 2"),
        (["src\t1\t\tfine sentence", "a b\t0"], 2, "expected 4"),
        (["only one column"], 1, "unrecognised"),
        (["a\tb\tc"], 1, "unrecognised"),
        (["good\t1", "bad\tyes"], 2, "label must be 0 or 1"),
        (["good\t1", "\t0"], 2, "empty sentence"),
    ],
)
def test_tsv_malformed_names_file_and_line(tmp_path, lines, bad_line, message):
    path = _write(tmp_path / "train.tsv", lines)
    with pytest.raises(ValueError, match=message) as exc:
        read_cola_tsv(path)
    assert f"{path}:{bad_line}:" in str(exc.value)


def test_missing_data_root_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as exc:
        load_cola_dir(missing)
    assert str(missing) in str(exc.value)
    assert "train.tsv" in str(exc.value) and "dev.tsv" in str(exc.value)
    _write(tmp_path / "train.tsv", ["a\t1"])
    with pytest.raises(FileNotFoundError, match=r"lacks dev\.tsv"):
        load_cola_dir(tmp_path)


def test_load_data_from_directory_is_not_embedded(tmp_path):
    _write(tmp_path / "train.tsv", ["a b\t1", "b a\t0"])
    _write(tmp_path / "dev.tsv", ["x\t1\t\tc d"])
    train, dev, source, extra = ColaTask(data_root=str(tmp_path)).load_data(seed=0)
    assert len(train) == 2 and dev == [("c d", 1)]
    assert source == "real CoLA (GLUE TSV files), 2 train / 1 dev"  # no machine path
    assert extra["layouts"] == {"train": "2-column", "dev": "glue-4-column"}


def test_hub_without_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="`datasets` package"):
        ColaTask(data_root="hub").load_data(seed=0)


# ------------------------------------------------------------------------------ embedded corpus


def test_embedded_corpus_deterministic_balanced_and_clean():
    train, dev, counts = generate_corpus(2000, 300, seed=3)
    again = generate_corpus(2000, 300, seed=3)
    assert (train, dev, counts) == again
    other = generate_corpus(2000, 300, seed=4)
    assert other[0] != train

    for split in (train, dev):
        frac = sum(y for _, y in split) / len(split)
        assert 0.65 <= frac <= 0.75  # CoLA: ~70% acceptable
    everything = train + dev
    sentences = [s for s, _ in everything]
    assert len(set(sentences)) == len(sentences)  # no duplicates, so none across labels/splits
    assert not {s for s, _ in train} & {s for s, _ in dev}
    # tokenized like CoLA: lower case, space separated, "n't" split off, no final full stop
    assert all(s == s.lower() and s == s.strip() and not s.endswith(".") for s in sentences)
    assert all("  " not in s and "n't" not in s.replace(" n't", "") for s in sentences)
    # every corruption type is used and the counts add up to the unacceptable sentences
    assert all(counts[name] > 0 for name in CORRUPTIONS)
    assert sum(counts.values()) == sum(1 - y for _, y in everything)


def test_embedded_corpus_labels_reflect_grammar():
    """Independent spot checks: error patterns only ever occur in unacceptable sentences."""
    train, _dev, _ = generate_corpus(3000, 10, seed=0)
    good = [s.split() for s, y in train if y == 1]
    bad = [s.split() for s, y in train if y == 0]
    dets = {"the", "a", "an", "my", "this", "these", "those"}
    plural_nouns = {"dogs", "cats", "children", "men", "women", "books", "boxes", "mice"}

    def doubled_det(w):
        return any(a in dets and b in dets for a, b in itertools.pairwise(w))

    def a_plural(w):  # "a dogs", "every children"
        return any(
            a in ("a", "an", "every", "each") and b in plural_nouns
            for a, b in itertools.pairwise(w)
        )

    def modal_plus_inflected(w):  # "will sleeps", "can slept"
        modals = {"will", "can", "should", "might", "must"}
        inflected = {b for b in w if b.endswith(("s", "ed", "ing"))} - {"need", "bring"}
        return any(a in modals and b in inflected for a, b in itertools.pairwise(w))

    for check in (doubled_det, a_plural, modal_plus_inflected):
        assert not any(check(w) for w in good), check.__name__
        assert any(check(w) for w in bad), check.__name__
    # acceptable sentences always start with their subject's determiner, never with a verb
    determiners = "the a an my his her our their no every each this that these those several many"
    assert {w[0] for w in good} <= set(determiners.split()) | {"two", "three", "some"}


# ----------------------------------------------------------------------------- model and batches


@pytest.fixture(scope="module")
def task():
    """The packaged MiniLM on a small embedded corpus, loaded once with the network blocked.

    One intra-op thread: on a shared, oversubscribed CPU two spinning OpenMP threads per process
    made these tiny forwards 5-8x slower (measured), and the tests gain nothing from threading.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted while loading the packaged model")

    mp.setattr(socket.socket, "connect", no_network)
    try:
        t = ColaTask(batch_size=16, max_length=32, embedded_train_size=160, embedded_dev_size=32)
        t.info = t.setup(torch.device("cpu"), seed=0)
    finally:
        mp.undo()
    yield t
    torch.set_num_threads(threads)


def test_packaged_model_loads_offline_with_new_head(task):
    info = task.info
    assert info.embedded is True
    assert info.data_source.startswith("embedded:")
    assert (
        "all-MiniLM-L6-v2" in info.model_source and "new classification head" in info.model_source
    )
    assert (info.num_train, info.num_val) == (160, 32)
    assert task.model.config.num_labels == 2
    assert task.model.training  # from_pretrained returns eval mode; setup must undo that


def test_head_initialisation_follows_seed(task):
    same, _, _ = load_model_and_tokenizer(None, seed=0)
    other, _, _ = load_model_and_tokenizer(None, seed=1)
    w = task.model.classifier.weight
    assert torch.equal(same.classifier.weight, w)
    assert not torch.equal(other.classifier.weight, w)
    # the encoder is pretrained, hence identical whatever the seed
    assert torch.equal(
        other.bert.embeddings.word_embeddings.weight, same.bert.embeddings.word_embeddings.weight
    )


def test_unknown_hub_model_is_a_clear_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "no-such-org/no-such-model-xyz"
    with pytest.raises(FileNotFoundError) as exc:
        load_model_and_tokenizer(name, seed=0)
    msg = str(exc.value)
    assert name in msg
    assert "offline" in msg.lower() or "HF_HUB_OFFLINE" in msg
    assert "all-MiniLM-L6-v2" in msg
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_model_and_tokenizer("/definitely/not/a/model/dir", seed=0)


def _batches(task, **kw):
    return list(task.train_batches(kw.pop("epoch", 0), kw.pop("start", 0), **kw))


def _same(x, y):
    return all(x[k].shape == y[k].shape and torch.equal(x[k], y[k]) for k in x)


def _pad_cat(parts, key):
    width = max(p[key].shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p[key], (0, width - p[key].shape[1])) for p in parts])


def test_train_batches_deterministic_resumable_and_sharded(task):
    a = _batches(task, epoch=1, seed=5)
    b = _batches(task, epoch=1, seed=5)
    assert len(a) == task.steps_per_epoch() == 160 // 16
    assert all(x.keys() == {"input_ids", "attention_mask", "labels"} for x in a)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not all(_same(x, y) for x, y in zip(a, _batches(task, epoch=2, seed=5)))
    assert not all(_same(x, y) for x, y in zip(a, _batches(task, epoch=1, seed=6)))
    # resuming at batch k yields exactly the remaining batches
    resumed = _batches(task, epoch=1, seed=5, start=3)
    assert len(resumed) == len(a) - 3
    assert all(_same(x, y) for x, y in zip(resumed, a[3:]))
    # dynamic padding: trimmed to the longest row, which fills the last column
    for x in a:
        assert x["input_ids"].shape[1] <= 32
        assert bool(x["attention_mask"][:, -1].any())
        assert x["input_ids"].device == task.device
    # two ranks together form the global batch
    r0 = _batches(task, epoch=1, seed=5, rank=0, world_size=2)
    r1 = _batches(task, epoch=1, seed=5, rank=1, world_size=2)
    for g, p0, p1 in zip(a, r0, r1):
        assert p0["labels"].shape[0] == p1["labels"].shape[0] == 8
        assert torch.equal(torch.cat([p0["labels"], p1["labels"]]), g["labels"])
        for key in ("input_ids", "attention_mask"):
            joined = _pad_cat([p0, p1], key)
            assert torch.equal(joined, g[key][:, : joined.shape[1]])
            assert not g[key][:, joined.shape[1] :].any()


def test_loss_metrics_are_device_tensors(task):
    batch = _batches(task, epoch=0, seed=0)[0]
    loss, metrics = task.loss(batch)
    assert loss.ndim == 0 and loss.requires_grad
    assert set(metrics) == {"mcc", "accuracy"}
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in metrics.values())


def test_evaluate_matches_unbatched_predictions(task):
    """Length-sorted, padded, batched evaluation equals scoring one sentence at a time."""
    task.model.train()
    result = task.evaluate()
    assert set(result) == set(task.metric_names)
    assert task.model.training  # train mode restored
    _, dev, _ = generate_corpus(160, 32, seed=0)  # the fixture's corpus (corpus_seed=0)
    preds, losses = [], []
    task.model.eval()
    with torch.no_grad():
        for sentence, label in dev:
            enc = task.tokenizer(sentence, return_tensors="pt", truncation=True, max_length=32)
            logits = task.model(input_ids=enc["input_ids"]).logits
            preds.append(int(logits.argmax(-1)))
            losses.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor([label]))))
    y = [label for _, label in dev]
    assert result["mcc"] == pytest.approx(matthews_corrcoef(y, preds), abs=1e-6)
    assert result["accuracy"] == pytest.approx(accuracy_score(y, preds), abs=1e-6)
    assert result["loss"] == pytest.approx(np.mean(losses), rel=1e-4)
    task.evaluate()
    assert not task.model.training  # eval mode is preserved too
    task.model.train()


def test_few_steps_on_a_fixed_batch_reduce_the_loss(task):
    model = copy.deepcopy(task.model).eval()  # eval: no dropout, so losses are comparable
    batch = {k: v[:8] for k, v in _batches(task, epoch=0, seed=0)[0].items()}
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)

    def loss_of():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits, batch["labels"])

    with torch.no_grad():
        before = float(loss_of())
    for _ in range(3):
        opt.zero_grad()
        loss_of().backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_of()) < 0.7 * before


# ----------------------------------------------------------------------------- mean pooling


@pytest.fixture(scope="module")
def mean_task():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = ColaTask(
        batch_size=8, max_length=32, embedded_train_size=16, embedded_dev_size=8, pooling="mean"
    )
    t.info = t.setup(torch.device("cpu"), seed=0)
    yield t
    torch.set_num_threads(threads)


def test_mean_pooling_matches_sentence_embeddings_one_at_a_time(mean_task):
    """Padded, batched logits equal a linear map of each sentence's mean token state, computed
    unpadded with the plain encoder (the sentence-transformers recipe) and NumPy."""
    from transformers import AutoModel

    from torch_clip.tasks.cola import packaged_model_dir

    assert "new mean-pooling head" in mean_task.info.model_source
    assert "classification head" not in mean_task.info.model_source
    encoder = AutoModel.from_pretrained(str(packaged_model_dir())).eval()
    head = mean_task.model.classifier
    w, b = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
    _, dev, _ = generate_corpus(16, 8, seed=0)
    batch = mean_task._batch(mean_task._dev, torch.arange(len(dev)))
    mean_task.model.eval()
    with torch.no_grad():
        got = mean_task._logits(batch).double().numpy()
        for i, (sentence, _) in enumerate(dev):
            enc = mean_task.tokenizer(sentence, return_tensors="pt")
            states = encoder(**enc).last_hidden_state[0].double().numpy()
            np.testing.assert_allclose(got[i], w @ states.mean(0) + b, atol=2e-5)
    mean_task.model.train()


def test_mean_pooling_trains_every_parameter_and_seeds_its_head(mean_task):
    """No parameter without a gradient (DDP needs that: the BERT pooler is dropped), and the new
    head is drawn from the run seed like the [CLS] head."""
    loss, _ = mean_task.loss(_batches(mean_task, epoch=0, seed=0)[0])
    mean_task.model.zero_grad()
    loss.backward()
    names = [n for n, p in mean_task.model.named_parameters() if p.grad is None]
    assert names == []
    assert not any("pooler" in n for n, _ in mean_task.model.named_parameters())
    other = ColaTask(embedded_train_size=16, embedded_dev_size=8, pooling="mean")
    other.setup(torch.device("cpu"), seed=1)
    assert not torch.equal(other.model.classifier.weight, mean_task.model.classifier.weight)
    again = ColaTask(embedded_train_size=16, embedded_dev_size=8, pooling="mean")
    again.setup(torch.device("cpu"), seed=0)
    assert torch.equal(again.model.classifier.weight, mean_task.model.classifier.weight)


def test_a_local_model_directory_of_another_family_trains_with_the_mean_head(tmp_path):
    """``model_name_or_path`` given a local directory of another encoder family (MPNet, the family
    of all-mpnet-base-v2 in the README's CoLA section): it loads offline, the mean head drops
    the encoder's pooler so every parameter gets a gradient, and its logits are the head applied
    to each sentence's mean token state computed unpadded with the plain encoder."""
    from transformers import AutoModel, AutoTokenizer, MPNetConfig, MPNetForSequenceClassification

    from torch_clip.tasks.cola import packaged_model_dir

    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=30527, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, pad_token_id=0)  # fmt: skip
    MPNetForSequenceClassification(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(packaged_model_dir())).save_pretrained(tmp_path)
    t = ColaTask(model_name_or_path=str(tmp_path), batch_size=8, max_length=32,
                 embedded_train_size=16, embedded_dev_size=8, pooling="mean")  # fmt: skip
    info = t.setup(torch.device("cpu"), seed=0)
    # named by what it is, never by a path of the machine
    expected = (
        f"{tmp_path.name} (local directory; mpnet, 1 layers, width 16) + new mean-pooling head"
    )
    assert info.model_source == expected and str(tmp_path.parent) not in info.model_source
    assert type(t.model.encoder).__name__ == "MPNetModel" and t.model.encoder.pooler is None

    loss, _ = t.loss(_batches(t, epoch=0, seed=0)[0])
    loss.backward()
    assert [n for n, p in t.model.named_parameters() if p.grad is None] == []

    encoder = AutoModel.from_pretrained(str(tmp_path)).eval()
    head = t.model.classifier
    w, b = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
    _, dev, _ = generate_corpus(16, 8, seed=0)
    t.model.eval()
    with torch.no_grad():
        got = t._logits(t._batch(t._dev, torch.arange(len(dev)))).double().numpy()
        for i, (sentence, _) in enumerate(dev):
            states = encoder(**t.tokenizer(sentence, return_tensors="pt")).last_hidden_state[0]
            np.testing.assert_allclose(got[i], w @ states.double().numpy().mean(0) + b, atol=2e-5)


def test_a_binary_tsv_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="not UTF-8 text") as err:
        read_cola_tsv(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
