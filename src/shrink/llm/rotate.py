"""Orthogonal rotations folded into a Llama-style decoder's weights (QuaRot / SpinQuant's fixed rotations, no
online transform): the same function, with weights whose outliers are spread across every input, which a
group-wise int4 grid then quantizes with less error.

With RMSNorm (no mean subtracted), ``rms(x Q) = rms(x)`` for any orthogonal ``Q``. So, after each norm's weight is
folded into the Linears that read it, the whole residual stream can be carried rotated, ``h' = h Q``:

- the embedding rows become ``E Q``;
- every Linear that reads the stream (``q/k/v``, ``gate/up``, ``lm_head``) gets ``W' = W diag(g) Q``;
- every Linear that writes it (``o_proj``, ``down_proj``) gets ``W' = Qᵀ W`` (and ``b' = b Q``).

Inside attention, each value head and the ``o_proj`` columns that read it are rotated by one more orthogonal
``Q_h`` of the head size (rotary embeddings touch queries and keys only, so values can be). ``Q`` is a Hadamard
matrix with random signs when one of the size can be built (Sylvester's 2^k, times Paley's construction for
q + 1 with q a prime ≡ 3 mod 4: e.g. 576 = 8 x 72), else a random orthogonal matrix; all arithmetic is float64.
The tied ``lm_head`` is untied (it reads the stream through the final norm, the embedding writes it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrink.errors import ConfigError

__all__ = ["Rotation", "rotate_llama", "hadamard", "random_orthogonal"]


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def _paley(q: int) -> torch.Tensor:
    """A Hadamard matrix of order ``q + 1`` (Paley's first construction; ``q`` a prime ≡ 3 mod 4)."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if i in residues else -1.0 for i in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    jacobi = chi[(idx[None, :] - idx[:, None]) % q]  # antisymmetric since q ≡ 3 (mod 4)
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1.0, -1.0, jacobi
    return s + torch.eye(q + 1, dtype=torch.float64)


def _sylvester(n: int) -> torch.Tensor:
    """Sylvester's Hadamard matrix of order ``n``, a power of two."""
    from scipy.linalg import hadamard as sylvester

    return torch.from_numpy(sylvester(n).astype("float64"))


def hadamard(n: int) -> torch.Tensor | None:
    """A Hadamard matrix of order ``n`` (entries ±1, ``H Hᵀ = n I``, float64): Sylvester's for powers of two, else
    Sylvester's ⊗ Paley's for ``n = 2^k (q + 1)``; None when neither construction reaches ``n``."""
    if n < 1:
        raise ConfigError(f"hadamard: order must be positive, got {n}")
    if n & (n - 1) == 0:
        return _sylvester(n)
    power = 1
    while n % power == 0:
        q = n // power - 1
        if q % 4 == 3 and _is_prime(q):
            return torch.kron(_sylvester(power), _paley(q))
        power *= 2
    return None


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random orthogonal ``n x n`` matrix (QR of a Gaussian, signs fixed so it is Haar-distributed), float64."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


@dataclass(frozen=True)
class Rotation:
    """What :func:`rotate_llama` used: per rotated space, ``"hadamard"`` or ``"random orthogonal"``."""

    residual: str
    heads: str


def _orthogonal(n: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    h = hadamard(n)
    if h is None:
        return random_orthogonal(n, generator), "random orthogonal"
    signs = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    return signs[:, None] * h / n**0.5, "hadamard"


def _blocks(model: Any) -> list[Any]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    parts = ("embed_tokens", "norm")
    if layers is None or not all(hasattr(inner, p) for p in parts) or not hasattr(model, "lm_head"):
        raise ConfigError(
            "rotate_llama: expected a Llama-style causal LM (model.model.embed_tokens / .layers / .norm and lm_head), "
            f"got {type(model).__name__}"
        )
    for i, block in enumerate(layers):
        for path in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                     "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"):  # fmt: skip
            try:
                block.get_submodule(path)
            except AttributeError:
                raise ConfigError(f"rotate_llama: layer {i} has no {path} (not a Llama-style block)") from None
    return list(layers)


def _check_norm(norm: nn.Module, where: str) -> torch.Tensor:
    """The norm's weight; only a plain RMSNorm (``weight * x / rms(x)``) commutes with a rotation."""
    name = type(norm).__name__
    weight = getattr(norm, "weight", None)
    if not name.endswith("RMSNorm") or "Gemma" in name or weight is None or getattr(norm, "bias", None) is not None:
        raise ConfigError(f"rotate_llama: {where} is {name}; only a plain RMSNorm commutes with a rotation")
    return weight


def _read(layer: nn.Linear, gain: torch.Tensor, q: torch.Tensor) -> None:
    """A Linear that reads the rotated stream through a norm of weight ``gain``: ``W diag(g) Q``."""
    w = layer.weight.detach().double()
    layer.weight.data = ((w * gain.double()) @ q).to(layer.weight.dtype)


def _write(layer: nn.Linear, q: torch.Tensor) -> None:
    """A Linear whose output joins the rotated stream: ``Qᵀ W`` (and ``b Q``)."""
    layer.weight.data = (q.T @ layer.weight.detach().double()).to(layer.weight.dtype)
    if layer.bias is not None:
        layer.bias.data = (layer.bias.detach().double() @ q).to(layer.bias.dtype)


def _rotate_values(attn: Any, qh: torch.Tensor, head_dim: int, q_heads: int, kv_heads: int) -> None:
    """Each value head ``v_h Q_h`` (rows of ``v_proj``), and the ``o_proj`` columns of every query head that reads
    it ``W_o[:, h] Q_h``."""
    v, o = attn.v_proj, attn.o_proj
    w = v.weight.detach().double().reshape(kv_heads, head_dim, -1)
    v.weight.data = torch.einsum("dk,hdi->hki", qh, w).reshape(v.weight.shape).to(v.weight.dtype)
    if v.bias is not None:
        b = v.bias.detach().double().reshape(kv_heads, head_dim)
        v.bias.data = (b @ qh).reshape(-1).to(v.bias.dtype)
    wo = o.weight.detach().double().reshape(o.out_features, q_heads, head_dim)
    o.weight.data = (wo @ qh).reshape(o.weight.shape).to(o.weight.dtype)


@torch.no_grad()
def rotate_llama(model: nn.Module, seed: int = 0, heads: bool = True) -> tuple[nn.Module, Rotation]:
    """A copy of ``model`` (a Llama-style causal LM: Llama, SmolLM, Mistral, Qwen2) with its residual stream and,
    with ``heads``, its value heads rotated (module docstring); the same function up to float rounding, with every
    norm's weight 1 and ``lm_head`` untied. Returns the copy and what rotation each space got. ``model`` itself is
    not changed. Raises :class:`ConfigError` for another architecture, and when the copy's outputs differ from the
    original's on a random input (a block this rotation does not know)."""
    blocks = _blocks(model)
    src: Any = model  # a transformers model: its config and submodules are typed loosely
    config = src.config
    hidden = int(config.hidden_size)
    q_heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // q_heads)
    for i, block in enumerate(blocks):
        _check_norm(block.input_layernorm, f"layer {i} input_layernorm")
        _check_norm(block.post_attention_layernorm, f"layer {i} post_attention_layernorm")
    _check_norm(src.model.norm, "the final norm")

    generator = torch.Generator().manual_seed(seed)
    q, residual_kind = _orthogonal(hidden, generator)
    qh, head_kind = _orthogonal(head_dim, generator) if heads else (None, "none")
    out: Any = copy.deepcopy(model).eval()
    if out.lm_head.weight is out.model.embed_tokens.weight:
        out.lm_head.weight = nn.Parameter(out.lm_head.weight.detach().clone())
    out.config.tie_word_embeddings = False
    emb = out.model.embed_tokens.weight
    emb.data = (emb.detach().double() @ q).to(emb.dtype)
    for block in out.model.layers:
        attn, mlp = block.self_attn, block.mlp
        streams = (
            (block.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj), attn.o_proj),
            (block.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj), mlp.down_proj),
        )
        for norm, readers, writer in streams:
            for layer in readers:
                _read(layer, norm.weight.detach(), q)
            norm.weight.data.fill_(1.0)
            _write(writer, q)
        if qh is not None:
            _rotate_values(attn, qh, head_dim, q_heads, kv_heads)
    _read(out.lm_head, out.model.norm.weight.detach(), q)
    out.model.norm.weight.data.fill_(1.0)
    _check_same_function(model, out)
    return out, Rotation(residual_kind, head_kind)


def _check_same_function(model: Any, rotated: Any) -> None:
    vocab = int(model.config.vocab_size)
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    ref = model(input_ids=ids, use_cache=False).logits.float()
    got = rotated(input_ids=ids, use_cache=False).logits.float()
    err = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
    if err > 1e-3:
        raise ConfigError(
            f"rotate_llama: the rotated copy's logits differ from the original's by {err:.2e} (relative): this "
            f"{type(model).__name__} has a block the rotation does not account for"
        )
