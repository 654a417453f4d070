"""FP8 e4m3 quantisation with tensor / token / token_head / block scales, and dequantisation."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._validate import FLOAT_DTYPES, check_choice, check_tensor

GRANULARITIES = ("tensor", "token", "token_head", "block")


def quantize_fp8(x, *, granularity="tensor", block=128, backend="auto"):
    """Quantise x to float8_e4m3fn with fp32 scales: scale = amax / 448 per group (never below 1e-12),
    q = round_nearest_even(x / scale) saturated to +-448.

    granularity: "tensor" (scale shape ()), "token" (one scale per token: (batch, tokens, 1, 1) for a 4-D
    (batch, tokens, heads, head_dim) tensor, (..., 1) otherwise), "token_head" ((..., 1): one per last-dim
    row, the official FP8 KV cache), "block" ((..., dim // block), 1 x block tiles along the last dim).
    NaN/Inf: amax ignores non-finite values, +-inf saturate to +-448*scale, NaN stays NaN.
    Returns (q, scale).
    """
    op = "quantize_fp8"
    check_tensor(op, "x", x, dtypes=FLOAT_DTYPES)
    check_choice(op, "granularity", granularity, GRANULARITIES)
    if granularity in ("token", "token_head", "block") and x.dim() < 1:
        raise ValueError(f"{op}: granularity={granularity!r} needs x with at least 1 dim, got a scalar")
    if granularity == "block":
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"{op}: block must be a positive int, got {block!r}")
        if x.shape[-1] % block:
            raise ValueError(f"{op}: granularity='block' needs the last dim to be a multiple of block={block}, "
                             f"got shape {tuple(x.shape)}")
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        return reference.quantize_fp8_ref(x, granularity=granularity, block=block)
    gs = reference.fp8_group_size(x.shape, granularity, block)
    xc = x.contiguous()
    q = torch.empty(x.shape, dtype=reference.FP8_DTYPE, device=x.device)
    scale = torch.empty(reference.fp8_scale_shape(x.shape, granularity, block), dtype=torch.float32, device=x.device)
    _backend.launch(op, b, xc, gs, q, scale)
    return q, scale


def dequantize_fp8(q, scale, dtype=torch.bfloat16, *, backend="auto"):
    """q * scale (scale from quantize_fp8, any granularity, broadcast by shape), cast to dtype."""
    op = "dequantize_fp8"
    check_tensor(op, "q", q, dtypes=(reference.FP8_DTYPE,))
    check_tensor(op, "scale", scale, dtypes=(torch.float32,))
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be float32/bfloat16/float16, got {dtype}")
    if scale.dim() not in (0, q.dim()):
        raise ValueError(f"{op}: scale must be 0-D or have q's rank {q.dim()}, got shape {tuple(scale.shape)}")
    if scale.dim():
        lead_ok = all(s in (1, d) for s, d in zip(scale.shape[:-1], q.shape[:-1]))
        last = scale.shape[-1]
        if not lead_ok or last < 1 or q.shape[-1] % last:
            raise ValueError(f"{op}: scale shape {tuple(scale.shape)} does not match q {tuple(q.shape)}")
    b = _backend.resolve(op, backend, q.device)
    if b == "torch":
        return reference.dequantize_fp8_ref(q, scale, dtype)
    # one scale per contiguous group of q's elements: expand the scale's leading dims to q's first
    full = reference.fp8_expand_scale(scale, q.shape)  # view
    if scale.dim() == 0:
        gs, sc = max(1, q.numel()), scale.reshape(1)
    else:
        last = scale.shape[-1]
        per_row = q.shape[-1] // last  # elements per scale along the last dim
        lead = list(q.shape[:-1])
        if len(q.shape) == 4 and scale.shape[-1] == 1 and scale.shape[-2] == 1 and q.shape[-2] > 1:
            gs, sc = q.shape[-1] * q.shape[-2], scale.expand(*q.shape[:-2], 1, 1).contiguous()  # token scale
        else:
            gs, sc = per_row, scale.expand(*lead, last).contiguous()
        del full
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    _backend.launch(op, b, q.contiguous(), sc.reshape(-1), gs, out)
    return out


@_backend.register_fake("liveact::quantize_fp8_fwd")
def _quantize_fp8_fake(x, group_size, q, scale):
    return None


@_backend.register_fake("liveact::dequantize_fp8_fwd")
def _dequantize_fp8_fake(q, scale, group_size, out):
    return None
