"""Structured pruning of Llama-style decoders (MLP channels and query heads, grouped-query attention respected)
and recovery by distillation from the unpruned model, against fine-tuning on hard labels for the same steps.

Heads: with GQA every key/value head serves a group of query heads; the same number of query heads is removed
from each group, so every key/value head keeps serving an equal group and the model runs unchanged.

Importance, with calibration windows (activation-aware, as Wanda / FLAP do for structures): an MLP channel scores
``||x_j|| * ||W_down column j||`` where ``x_j`` is its activation (the input of ``down_proj``) over the calibration
tokens, a head the sum of the same product over its ``o_proj`` input columns — what removing it takes out of the
residual stream. Without calibration, weights only: ``||W_gate row|| * ||W_up row|| * ||W_down column||`` and
``||W_q rows|| * ||W_o columns||`` (much worse on a real model: see ``make bench-llm``). Layers are physically
sliced, the config updated.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from shrink.data import forward_pre_hooks
from shrink.distillation.losses import kd_loss
from shrink.errors import ConfigError, DataError

__all__ = ["prune_llama", "recover"]


def _slice(layer: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    w = layer.weight.detach().index_select(dim, keep).clone()
    out = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    out.weight = nn.Parameter(w)
    if layer.bias is not None:
        b = layer.bias.detach()
        out.bias = nn.Parameter(b.index_select(0, keep).clone() if dim == 0 else b.clone())
    return out


def _input_norms(model: nn.Module, layers: list[nn.Linear], windows: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, the L2 norm of each input channel over every calibration token."""
    sums = [torch.zeros(layer.in_features, dtype=torch.float64) for layer in layers]

    def hook(i: int):  # noqa: ANN202
        def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[i] += (x * x).sum(0)

        return pre

    with torch.no_grad(), forward_pre_hooks({layer: hook(i) for i, layer in enumerate(layers)}):
        for ids in windows:
            model(input_ids=ids.reshape(1, -1), use_cache=False)
    return [s.sqrt().float() for s in sums]


def _prune_mlp(mlp: Any, ratio: float, multiple: int, act: torch.Tensor | None) -> int:
    if act is None:
        score = mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
    else:
        score = act * mlp.down_proj.weight.norm(dim=0)
    keep_n = max(multiple, int(round(score.numel() * (1 - ratio) / multiple)) * multiple)
    keep = score.topk(keep_n).indices.sort().values
    mlp.gate_proj, mlp.up_proj = _slice(mlp.gate_proj, keep, 0), _slice(mlp.up_proj, keep, 0)
    mlp.down_proj = _slice(mlp.down_proj, keep, 1)
    return keep_n


def _prune_heads(attn: Any, kv_heads: int, drop_per_group: int, act: torch.Tensor | None) -> int:
    d = attn.head_dim
    heads = attn.q_proj.out_features // d
    group = heads // kv_heads
    if act is None:
        o_norm = attn.o_proj.weight.reshape(-1, heads, d).transpose(0, 1).reshape(heads, -1).norm(dim=1)
        score = attn.q_proj.weight.reshape(heads, -1).norm(dim=1) * o_norm
    else:
        score = (act * attn.o_proj.weight.norm(dim=0)).reshape(heads, d).sum(1)
    keep_heads = []
    for g in range(kv_heads):  # query heads g*group .. (g+1)*group-1 read key/value head g
        local = score[g * group : (g + 1) * group].topk(group - drop_per_group).indices.sort().values
        keep_heads += (local + g * group).tolist()
    cols = torch.tensor([h * d + i for h in keep_heads for i in range(d)])
    attn.q_proj, attn.o_proj = _slice(attn.q_proj, cols, 0), _slice(attn.o_proj, cols, 1)
    attn.num_key_value_groups = group - drop_per_group
    return len(keep_heads)


@torch.no_grad()
def prune_llama(
    model: nn.Module,
    mlp_ratio: float = 0.25,
    head_ratio: float = 0.25,
    multiple: int = 8,
    calibration: Sequence[torch.Tensor] | None = None,
) -> nn.Module:
    """A physically smaller copy of a Llama-style ``model``: ``mlp_ratio`` of each layer's MLP channels (kept
    counts rounded to ``multiple``) and ``head_ratio`` of its query heads removed, the same number from each
    key/value group (rounded to whole heads per group, at least one kept). ``calibration`` token windows (1-D or
    [1, n]) make the ranking activation-aware (see the module doc). The input model is not changed."""
    if not (0 <= mlp_ratio < 1 and 0 <= head_ratio < 1):
        raise ConfigError(f"prune_llama: ratios must be in [0, 1), got mlp {mlp_ratio}, heads {head_ratio}")
    if calibration is not None and len(calibration) == 0:
        raise DataError("prune_llama: calibration has no token window")
    out: Any = copy.deepcopy(model).eval()
    cfg = out.config
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    drop = min(group - 1, int(round(group * head_ratio)))
    blocks = list(out.model.layers)
    acts: list[torch.Tensor | None] = [None] * (2 * len(blocks))
    if calibration is not None:
        watched = [m for b in blocks for m in (b.mlp.down_proj, b.self_attn.o_proj)]
        acts = list(_input_norms(out, watched, calibration))
    heads = inter = 0
    for i, layer in enumerate(blocks):
        inter = _prune_mlp(layer.mlp, mlp_ratio, multiple, acts[2 * i])
        heads = _prune_heads(layer.self_attn, cfg.num_key_value_heads, drop, acts[2 * i + 1])
    cfg.intermediate_size, cfg.num_attention_heads = inter, heads
    return out


def recover(
    student: nn.Module,
    windows: Sequence[torch.Tensor],
    steps: int,
    teacher: nn.Module | None = None,
    mode: Literal["kd", "hard"] = "kd",
    lr: float = 1e-4,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Train ``student`` in place for ``steps`` steps over token windows (cycled): ``kd`` matches the teacher's
    next-token distribution (T²-scaled KL), ``hard`` fits the next tokens. Returns the loss curve."""
    if not windows:
        raise DataError("recover: no training windows")
    if mode == "kd" and teacher is None:
        raise ConfigError("recover: mode='kd' needs the teacher (the unpruned model)")
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    student.train()
    losses = []
    for step in range(steps):
        ids = windows[step % len(windows)].reshape(1, -1)
        logits = student(input_ids=ids, use_cache=False).logits[0, :-1]
        if mode == "kd":
            assert teacher is not None
            with torch.no_grad():
                target = teacher(input_ids=ids, use_cache=False).logits[0, :-1]
            loss = kd_loss(logits, target, temperature)
        else:
            loss = nn.functional.cross_entropy(logits.float(), ids[0, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    student.eval()
    return {"losses": losses}
