"""W8A8 FP8 linear: per-tensor or per-channel weight scales, dynamic per-token activation scales, plus the
FP8Linear module and quantize_linears(model) that swaps a model's nn.Linear layers (reference-model.md §8.1)."""
from __future__ import annotations

import math

import torch
from torch import nn

from . import _backend, reference
from .fp8 import quantize_fp8
from ._validate import FLOAT_DTYPES, check_same_device, check_tensor


def scaled_mm_linear(x_q, x_scale, weight_q, w_scale, bias, out_dtype):
    """The torch._scaled_mm call of the CUDA fast path (rowwise scales; cuBLASLt / CUTLASS FP8 GEMM on sm_89+).

    x_q: (M, K) float8_e4m3fn row-major; x_scale: (M, 1) fp32; weight_q: (N, K) float8_e4m3fn (passed as the
    column-major (K, N) view); w_scale: (N,) fp32; bias: (N,) bf16 or None; out_dtype: torch.bfloat16 (the
    only output every rowwise backend supports). Also runs on CPU tensors (torch's emulation), which is how
    the tests check the arguments here.
    """
    N = weight_q.shape[0]
    return torch._scaled_mm(x_q, weight_q.t(), scale_a=x_scale.reshape(-1, 1), scale_b=w_scale.reshape(1, N),
                            bias=bias, out_dtype=out_dtype)


def _use_scaled_mm(x_q, weight_q, bias, out_dtype) -> bool:
    """sm_89+ with FP8 tensor cores, dims the FP8 GEMM accepts (multiples of 16), a bf16 output and a bias
    that is already bf16 (adding it in the GEMM epilogue is then exact). Everything else takes the exact
    emulation kernel."""
    if out_dtype != torch.bfloat16 or (bias is not None and bias.dtype != torch.bfloat16):
        return False
    if x_q.shape[1] % 16 or weight_q.shape[0] % 16 or x_q.shape[0] == 0:
        return False
    return torch.cuda.get_device_capability(x_q.device) >= (8, 9)


def fp8_linear(x, weight_q, weight_scale, bias=None, *, out_dtype=None, backend="auto"):
    """y = (q(x) @ weight_q^T) * x_scale * weight_scale + bias, fp32 accumulation; inference only (no grads).

    x: (..., in_features) fp32/bf16/fp16, quantised per token on the fly (quantize_fp8 "token" scales);
    weight_q: (out_features, in_features) float8_e4m3fn; weight_scale: fp32, () / (1,) per tensor or
    (out_features,) / (out_features, 1) per channel; bias: (out_features,) fp32/bf16/fp16 or None.
    Returns (..., out_features) in out_dtype (default x.dtype).
    Backends: "cpu" (exact fp8 -> bf16 packing + AMX GEMM), "cuda" (torch._scaled_mm rowwise on sm_89+ for
    bf16 output, else an exact fp32 emulation), "torch" (reference).
    """
    op = "fp8_linear"
    check_tensor(op, "x", x, dtypes=FLOAT_DTYPES)
    check_tensor(op, "weight_q", weight_q, ndim=2, dtypes=(reference.FP8_DTYPE,))
    N, K = weight_q.shape
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(f"{op}: x must have shape (..., {K}) to match weight_q {tuple(weight_q.shape)}, "
                         f"got {tuple(x.shape)}")
    check_tensor(op, "weight_scale", weight_scale, dtypes=(torch.float32,))
    if weight_scale.numel() not in (1, N) or weight_scale.dim() > 2 or \
            (weight_scale.numel() == N and N > 1 and weight_scale.shape not in ((N,), (N, 1))):
        raise ValueError(f"{op}: weight_scale must have shape (), (1,), ({N},) or ({N}, 1), "
                         f"got {tuple(weight_scale.shape)}")
    check_tensor(op, "bias", bias, shape=(N,), dtypes=FLOAT_DTYPES, allow_none=True)
    check_same_device(op, x=x, weight_q=weight_q, weight_scale=weight_scale, bias=bias)
    out_dtype = x.dtype if out_dtype is None else out_dtype
    if out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: out_dtype must be float32/bfloat16/float16, got {out_dtype}")
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        return reference.fp8_linear_ref(x, weight_q, weight_scale, bias, out_dtype=out_dtype)
    x2 = x.reshape(math.prod(x.shape[:-1]), K)  # not -1: K may be 0
    xq, xs = quantize_fp8(x2, granularity="token", backend=b)  # (M, K), (M, 1)
    ws = weight_scale.reshape(-1).expand(N).contiguous()
    if b == "cuda" and _use_scaled_mm(xq, weight_q, bias, out_dtype):
        out = scaled_mm_linear(xq, xs, weight_q, ws, bias, out_dtype)
    else:
        out = torch.empty((x2.shape[0], N), dtype=out_dtype, device=x.device)
        _backend.launch(op, b, xq, xs.reshape(-1), weight_q, ws,
                        bias.float().contiguous() if bias is not None else None, out)
    return out.reshape(*x.shape[:-1], N)


class FP8Linear(nn.Module):
    """nn.Linear replacement holding an FP8 e4m3 weight (out_features, in_features) and its fp32 scale:
    (out_features,) for granularity="channel" (default), () for "tensor" (the official per-tensor recipe).
    Activations are quantised per token on every call. Inference only."""

    def __init__(self, in_features, out_features, bias=True, *, granularity="channel", device=None,
                 bias_dtype=torch.float32, backend="auto"):
        super().__init__()
        if granularity not in ("channel", "tensor"):
            raise ValueError(f"FP8Linear: granularity must be 'channel' or 'tensor', got {granularity!r}")
        self.in_features, self.out_features = in_features, out_features
        self.granularity, self.backend = granularity, backend
        self.register_buffer("weight_q", torch.zeros(out_features, in_features, dtype=reference.FP8_DTYPE,
                                                     device=device))
        self.register_buffer("weight_scale", torch.ones((out_features,) if granularity == "channel" else (),
                                                        dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=bias_dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, granularity="channel", backend="auto"):
        """Quantises linear.weight (per output channel or per tensor); the bias keeps its dtype."""
        w = linear.weight.detach()
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, granularity=granularity,
                device=w.device, bias_dtype=linear.bias.dtype if linear.bias is not None else torch.float32,
                backend=backend)
        q, s = quantize_fp8(w, granularity="token" if granularity == "channel" else "tensor")
        m.weight_q.copy_(q)
        m.weight_scale.copy_(s.reshape(m.weight_scale.shape))
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach())
        return m

    def forward(self, x):
        """x: (..., in_features) -> (..., out_features) in x.dtype."""
        return fp8_linear(x, self.weight_q, self.weight_scale, self.bias, backend=self.backend)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, granularity={self.granularity}")


def quantize_linears(model: nn.Module, filter=None, *, granularity="channel", backend="auto") -> nn.Module:
    """Replaces every nn.Linear of `model` for which filter(qualified_name, module) is true (all of them when
    filter is None, as the official enable_fp8_gemm does) by an FP8Linear, in place. Returns the model, or
    the new FP8Linear when `model` itself is an nn.Linear (it cannot be replaced in place)."""
    if type(model) is nn.Linear:
        return FP8Linear.from_linear(model, granularity=granularity, backend=backend) \
            if filter is None or filter("", model) else model
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            full = f"{name}.{cname}" if name else cname
            if type(child) is nn.Linear and (filter is None or filter(full, child)):
                setattr(mod, cname, FP8Linear.from_linear(child, granularity=granularity, backend=backend))
    return model


@_backend.register_fake("liveact::fp8_linear_fwd")
def _fp8_linear_fake(x_q, x_scale, w_q, w_scale, bias, out):
    return None
