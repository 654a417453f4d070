"""FP8 e4m3 quantisation with tensor / token / token_head / block scales, and dequantisation."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._validate import FLOAT_DTYPES, check_choice, check_same_device, check_tensor

GRANULARITIES = ("tensor", "token", "token_head", "block")


def quantize_fp8(x, *, granularity="tensor", block=128, backend="auto"):
    """Quantise x to float8_e4m3fn with fp32 scales: scale = max(amax / 448, 1e-12) per group, where amax
    is the largest finite |x| of the group, and q = round_nearest_even(x / scale) saturated to +-448.

    x: any shape, float32/bfloat16/float16 (strided inputs are made contiguous first).
    granularity -> scale shape:
      "tensor"     ()                                       one scale
      "token"      (batch, tokens, 1, 1) for a 4-D (batch, tokens, heads, head_dim) x, else (..., 1)
      "token_head" (..., 1)                                 one per last-dim row: the official FP8 KV cache
      "block"      (..., dim // block)                      1 x block tiles along the last dim
    Non-finite values: amax ignores NaN and +-inf (so one inf does not zero its group); +-inf become
    +-448 (i.e. +-448 * scale after dequantisation); NaN stays NaN. A scale is never 0 (all-zero groups
    get 1e-12). Returns (q, scale). No gradients (quantisation is not differentiable).
    """
    op = "quantize_fp8"
    check_tensor(op, "x", x, dtypes=FLOAT_DTYPES)
    check_choice(op, "granularity", granularity, GRANULARITIES)
    if granularity != "tensor" and x.dim() < 1:
        raise ValueError(f"{op}: granularity={granularity!r} needs x with at least 1 dim, got shape {tuple(x.shape)}")
    if granularity == "block":
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"{op}: block must be a positive int, got {block!r}")
        if x.shape[-1] % block:
            raise ValueError(f"{op}: granularity='block' needs the last dim to be a multiple of block={block}, "
                             f"got shape {tuple(x.shape)}")
    b = _backend.resolve(op, backend, x.device)
    if b == "torch" or x.numel() == 0:  # empty x: nothing to launch; scales (if any) are the minimum
        return reference.quantize_fp8_ref(x, granularity=granularity, block=block)
    gs = reference.fp8_group_size(x.shape, granularity, block)
    q = torch.empty(x.shape, dtype=reference.FP8_DTYPE, device=x.device)
    scale = torch.empty(reference.fp8_scale_shape(x.shape, granularity, block), dtype=torch.float32, device=x.device)
    _backend.launch(op, b, x.contiguous(), gs, q, scale)
    return q, scale


def dequantize_fp8(q, scale, dtype=torch.bfloat16, *, backend="auto"):
    """q * scale in fp32, cast to dtype (round to nearest even).

    q: float8_e4m3fn, any shape; scale: fp32 from quantize_fp8 (any granularity): 0-D, or q's rank with
    shape q.shape[:j] + (c,) + (1,) * k, c == q.shape[j] or (last dim only) c dividing it; each scale
    covers one contiguous group of q's elements.
    """
    op = "dequantize_fp8"
    check_tensor(op, "q", q, dtypes=(reference.FP8_DTYPE,))
    check_tensor(op, "scale", scale, dtypes=(torch.float32,))
    check_same_device(op, q=q, scale=scale)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be float32/bfloat16/float16, got {dtype}")
    try:
        gs = reference.fp8_scale_group_size(q.shape, scale.shape)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from None
    b = _backend.resolve(op, backend, q.device)
    if b == "torch":
        return reference.dequantize_fp8_ref(q, scale, dtype)
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    _backend.launch(op, b, q.contiguous(), scale.contiguous().reshape(-1), gs, out)
    return out


@_backend.register_fake("liveact::quantize_fp8_fwd")
def _quantize_fp8_fake(x, group_size, q, scale):
    return None


@_backend.register_fake("liveact::dequantize_fp8_fwd")
def _dequantize_fp8_fake(q, scale, group_size, out):
    return None
