"""What ``bench_step.py`` steps on: model-shaped parameters with fixed random gradients, the
optimizer state buffers every contender of a rule shares, and a prefilled ``auto`` history."""

from __future__ import annotations

import torch
from torch import nn

from clip_core.history import SortedHistory

MODELS = ("resnet18", "bert-base")
RULES = ("sgd", "adamw")
RULE_LABEL = {"sgd": "SGD", "adamw": "AdamW"}


def resnet18_shapes() -> list[tuple[int, ...]]:
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.resnet18(weights=None)
    return [tuple(p.shape) for p in model.parameters()]


def _bert_shapes_from_config(
    vocab: int = 30522,
    hidden: int = 768,
    layers: int = 12,
    intermediate: int = 3072,
    positions: int = 512,
    token_types: int = 2,
) -> list[tuple[int, ...]]:
    """BertModel's parameters in registration order, from BertConfig's default sizes."""
    h, i = hidden, intermediate
    shapes: list[tuple[int, ...]] = [(vocab, h), (positions, h), (token_types, h), (h,), (h,)]
    per_layer = [(h, h), (h,), (h, h), (h,), (h, h), (h,), (h, h), (h,), (h,), (h,)]
    per_layer += [(i, h), (i,), (h, i), (h,), (h,), (h,)]
    shapes += per_layer * layers
    shapes += [(h, h), (h,)]  # pooler
    return shapes


def bert_base_shapes() -> tuple[list[tuple[int, ...]], str]:
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        return _bert_shapes_from_config(), "built-in list (BertConfig defaults)"
    config = BertConfig()
    with torch.device("meta"):
        model = BertModel(config)
    return [tuple(p.shape) for p in model.parameters()], "transformers BertModel(BertConfig())"


def model_shapes(name: str) -> tuple[list[tuple[int, ...]], str]:
    if name == "resnet18":
        return resnet18_shapes(), "torchvision resnet18()"
    if name == "bert-base":
        return bert_base_shapes()
    raise ValueError(f"unknown model {name!r}")


class Workload:
    def __init__(
        self, name: str, shapes: list[tuple[int, ...]], device: torch.device, restore: bool
    ):
        self.name = name
        self.device = device
        torch.manual_seed(0)
        self.params = [nn.Parameter(torch.randn(s, device=device).mul_(0.02)) for s in shapes]
        for p in self.params:
            p.grad = torch.randn_like(p)
        self.grads = [p.grad for p in self.params]
        self.numel = sum(p.numel() for p in self.params)
        self.bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.master = [g.clone() for g in self.grads] if restore else None
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(self.grads))
            self.grad_norm = float(torch.linalg.vector_norm(norms))
            self.median_tensor_norm = float(norms.median())
            self.rms = float(
                torch.sqrt(sum((g.double() ** 2).sum() for g in self.grads) / self.numel)
            )
        zeros = lambda: [torch.zeros_like(p) for p in self.params]  # noqa: E731
        self.sgd_buf = zeros()
        self.adam_m = zeros()
        self.adam_v = zeros()
        self.floor_a = zeros()

    def restore_grads(self) -> None:
        if self.master is not None:
            torch._foreach_copy_(self.grads, self.master)

    def share_state(self, opt: torch.optim.Optimizer, rule: str, step_on_device: bool) -> None:
        """Point the optimizer's per-parameter state at the shared buffers before its first step."""
        for i, p in enumerate(self.params):
            state = opt.state[p]
            if rule == "sgd":
                state["momentum_buffer"] = self.sgd_buf[i]
            else:
                device = p.device if step_on_device else torch.device("cpu")
                state["step"] = torch.zeros((), dtype=torch.float32, device=device)
                state["exp_avg"] = self.adam_m[i]
                state["exp_avg_sq"] = self.adam_v[i]

    def state_is_shared(self, opt: torch.optim.Optimizer, rule: str) -> bool:
        keys = ("momentum_buffer",) if rule == "sgd" else ("exp_avg", "exp_avg_sq")
        shared = self.sgd_buf if rule == "sgd" else self.adam_m + self.adam_v
        ptrs = {t.data_ptr() for t in shared}
        return all(
            opt.state[p].get(k) is not None and opt.state[p][k].data_ptr() in ptrs
            for p in self.params
            for k in keys
        )


def prefilled_history(
    length: int, centre: float, room: int, device: torch.device, device_path: bool = False
) -> SortedHistory:
    """A whole-history SortedHistory as if ``length`` valid norms had been pushed already.

    Capacity follows the history's own doubling from 1024, with ``room`` free slots so the timed
    steps never trigger a growth. ``device_path`` forces the device path on CPU too.
    """
    gen = torch.Generator().manual_seed(1)
    raw = centre * (0.6 + 0.8 * torch.rand(length, generator=gen))  # λ_auto ≈ 1.2·centre
    capacity = 1024
    while capacity < length + room:
        capacity *= 2
    sorted_ = torch.full((1, capacity), float("inf"))
    sorted_[0, :length] = torch.sort(raw).values
    raw_buf = torch.zeros((1, capacity))
    raw_buf[0, :length] = raw
    history = SortedHistory(1, None, scalar=True, host_path=not device_path)
    history.load_state_dict(
        {
            "num_units": 1,
            "window": None,
            "pushes": length,
            "sorted": sorted_,
            "raw": raw_buf,
            "count": torch.tensor(length, dtype=torch.int64),
        },
        device,
    )
    return history
