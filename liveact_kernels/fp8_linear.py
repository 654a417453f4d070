"""W8A8 FP8 linear: per-tensor or per-channel weight scales, dynamic per-token activation scales."""
from __future__ import annotations

import torch
from torch import nn

from . import _backend, reference
from .fp8 import quantize_fp8
from ._validate import FLOAT_DTYPES, check_same_device, check_tensor


def fp8_linear(x, weight_q, weight_scale, bias=None, *, out_dtype=None, backend="auto"):
    """y = (q(x) @ weight_q^T) * x_scale * weight_scale + bias with fp32 accumulation.

    x: (..., in_features) fp32/bf16/fp16, quantised per token on the fly; weight_q: (out_features,
    in_features) float8_e4m3fn; weight_scale: () per tensor or (out_features,) / (out_features, 1) per channel,
    fp32; bias: (out_features,) or None. Returns (..., out_features) in out_dtype (default x.dtype).
    """
    op = "fp8_linear"
    check_tensor(op, "x", x, dtypes=FLOAT_DTYPES)
    check_tensor(op, "weight_q", weight_q, ndim=2, dtypes=(reference.FP8_DTYPE,))
    N, K = weight_q.shape
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(f"{op}: x must end with in_features={K} (weight_q {tuple(weight_q.shape)}), got {tuple(x.shape)}")
    check_tensor(op, "weight_scale", weight_scale, dtypes=(torch.float32,))
    if weight_scale.numel() not in (1, N):
        raise ValueError(f"{op}: weight_scale must have 1 or {N} elements, got shape {tuple(weight_scale.shape)}")
    check_tensor(op, "bias", bias, shape=(N,), dtypes=FLOAT_DTYPES, allow_none=True)
    check_same_device(op, x=x, weight_q=weight_q, weight_scale=weight_scale, bias=bias)
    out_dtype = out_dtype or x.dtype
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        return reference.fp8_linear_ref(x, weight_q, weight_scale, bias, out_dtype=out_dtype)
    x2 = x.reshape(-1, K)
    xq, xs = quantize_fp8(x2, granularity="token", backend=b)
    ws = weight_scale.float().reshape(-1).expand(N).contiguous()
    out = torch.empty((x2.shape[0], N), dtype=out_dtype, device=x.device)
    _backend.launch(op, b, xq, xs, weight_q, ws, bias.float().contiguous() if bias is not None else None, out)
    return out.reshape(*x.shape[:-1], N)


class FP8Linear(nn.Module):
    """nn.Linear replacement holding an FP8 e4m3 weight and fp32 scale (per channel by default)."""

    def __init__(self, in_features, out_features, bias=True, *, granularity="channel", device=None,
                 backend="auto"):
        super().__init__()
        if granularity not in ("channel", "tensor"):
            raise ValueError(f"FP8Linear: granularity must be 'channel' or 'tensor', got {granularity!r}")
        self.in_features, self.out_features, self.granularity, self.backend = in_features, out_features, granularity, backend
        self.register_buffer("weight_q", torch.zeros(out_features, in_features, dtype=reference.FP8_DTYPE, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features if granularity == "channel" else (),
                                                        dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, granularity="channel", backend="auto"):
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, granularity=granularity,
                device=linear.weight.device, backend=backend)
        gran = "token" if granularity == "channel" else "tensor"
        q, s = reference.quantize_fp8_ref(linear.weight.detach(), granularity=gran)
        m.weight_q.copy_(q)
        m.weight_scale.copy_(s.reshape(m.weight_scale.shape))
        if linear.bias is not None:
            m.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return m

    def forward(self, x):
        return fp8_linear(x, self.weight_q, self.weight_scale, self.bias, backend=self.backend)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, granularity={self.granularity}"


def quantize_linears(model: nn.Module, filter=None, *, granularity="channel", backend="auto") -> nn.Module:
    """Swaps every nn.Linear of `model` (for which filter(name, module) is true, if given) for an FP8Linear,
    in place; returns the model."""
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            full = f"{name}.{cname}" if name else cname
            if type(child) is nn.Linear and (filter is None or filter(full, child)):
                setattr(mod, cname, FP8Linear.from_linear(child, granularity=granularity, backend=backend))
    return model


@_backend.register_fake("liveact::fp8_linear_fwd")
def _fp8_linear_fake(x_q, x_scale, w_q, w_scale, bias, out):
    return None
