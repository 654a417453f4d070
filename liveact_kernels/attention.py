"""Scaled dot-product attention with FP8 K/V (per-(token, head) scales dequantised inside the kernel),
GQA, bottom-right causal masking and LSE; `sageattn` is the same op with SageAttention's signature."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._autograd import kernel_with_ref_backward, needs_grad
from ._validate import FLOAT_DTYPES, check_choice, check_same_device, check_tensor

FP8 = reference.FP8_DTYPE


def _dt(dtype):
    return str(dtype).replace("torch.", "")


def _nhd(t, layout):
    return None if t is None else (t if layout == "NHD" else t.transpose(1, 2))


def attention(q, k, v, *, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, k_scale=None,
              v_scale=None, backend="auto"):
    """softmax(q k^T * sm_scale) v with fp32 accumulation; output in q.dtype, laid out like q.

    tensor_layout "HND": q (batch, heads, seqlen_q, head_dim), k/v (batch, kv_heads, seqlen_k, head_dim);
    "NHD": (batch, seqlen, heads, head_dim). heads % kv_heads == 0. k and v may be float8_e4m3fn with
    k_scale / v_scale fp32 shaped like k with a last dim of 1. is_causal is bottom-right aligned.
    Returns out, or (out, lse) with lse (batch, heads, seqlen_q) fp32, natural log. Rows that see no key
    (empty k, or causal rows before the first key) give output 0 and lse -inf.

    The CPU kernel converts fp8 K/V tiles exactly to bf16 (fp32/fp16 inputs: fp32) and applies the per-key
    scales to the logits and probabilities in fp32; the fp8 NaN code (0x7f/0xff) is not propagated there
    (it reads as +-480 * scale).
    """
    op = "attention"
    check_choice(op, "tensor_layout", tensor_layout, ("HND", "NHD"))
    check_tensor(op, "q", q, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor(op, "k", k, ndim=4, dtypes=FLOAT_DTYPES + (FP8,))
    check_tensor(op, "v", v, ndim=4, dtypes=FLOAT_DTYPES + (FP8,))
    qn, kn, vn = _nhd(q, tensor_layout), _nhd(k, tensor_layout), _nhd(v, tensor_layout)
    B, Nq, Hq, Dh = qn.shape
    if kn.shape[0] != B or kn.shape[3] != Dh or kn.shape != vn.shape:
        raise ValueError(f"{op}: k and v must both have batch {B} and head_dim {Dh} like q, and equal shapes; "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} ({tensor_layout})")
    Nk, Hk = kn.shape[1], kn.shape[2]
    if Hk == 0 or Hq % Hk:
        raise ValueError(f"{op}: q heads ({Hq}) must be a multiple of k/v heads ({Hk})")
    for name, t, sc in (("k", k, k_scale), ("v", v, v_scale)):
        if t.dtype == FP8:
            want = list(t.shape)
            want[-1] = 1
            check_tensor(op, f"{name}_scale", sc, shape=tuple(want), dtypes=(torch.float32,))
        elif sc is not None:
            raise ValueError(f"{op}: {name}_scale is only for float8_e4m3fn {name}, but {name} is {_dt(t.dtype)}")
        elif t.dtype != q.dtype:
            raise TypeError(f"{op}: {name} must have q's dtype {_dt(q.dtype)} (or float8_e4m3fn), got {_dt(t.dtype)}")
    check_same_device(op, q=q, k=k, v=v, k_scale=k_scale, v_scale=v_scale)
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        qn, kn, vn = _nhd(q, tensor_layout), _nhd(k, tensor_layout), _nhd(v, tensor_layout)
    scale = float(sm_scale) if sm_scale is not None else Dh ** -0.5
    b = _backend.resolve(op, backend, q.device)
    if b == "torch":
        return reference.attention_ref(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=scale,
                                       return_lse=return_lse, k_scale=k_scale, v_scale=v_scale)

    def kernel(q, k, v, k_scale, v_scale):
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((B, Hq, Nq), dtype=torch.float32, device=q.device) if return_lse else None
        _backend.launch(op, b, _nhd(q, tensor_layout), _nhd(k, tensor_layout), _nhd(v, tensor_layout),
                        _nhd(k_scale, tensor_layout), _nhd(v_scale, tensor_layout), bool(is_causal), scale,
                        _nhd(out, tensor_layout), lse)
        return (out, lse) if return_lse else out

    if needs_grad(q, k, v):  # training: the kernel's forward, the reference's backward
        return kernel_with_ref_backward(
            kernel, lambda q, k, v, ks, vs: reference.attention_ref(
                q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=scale, return_lse=return_lse,
                k_scale=ks, v_scale=vs), (q, k, v, k_scale, v_scale))
    return kernel(q, k, v, k_scale, v_scale)


def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs):
    """Drop-in for SageAttention's `sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None,
    return_lse=False, **kwargs)`. Sage's tuning kwargs (smooth_k, smooth_v, pv_accum_dtype, qk_quant_gran)
    are accepted and have no effect here; `k_scale`/`v_scale` (FP8 K/V) and `backend` are passed through."""
    return attention(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
                     return_lse=return_lse, k_scale=kwargs.get("k_scale"), v_scale=kwargs.get("v_scale"),
                     backend=kwargs.get("backend", "auto"))


@_backend.register_fake("liveact::attention_fwd")
def _attention_fake(q, k, v, k_scale, v_scale, is_causal, sm_scale, out, lse):
    return None
