"""RMSNorm over the last dim (Wan's q/k norm runs over all 5120 channels before the head split)."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._autograd import kernel_with_ref_backward, needs_grad
from ._validate import FLOAT_DTYPES, check_out, check_same_device, check_tensor


def rms_norm(x, weight=None, *, eps=1e-6, out=None, backend="auto"):
    """x * rsqrt(mean(x^2, -1) + eps) * weight, fp32 math, cast to x.dtype.

    x: (..., dim); weight: (dim,) or None; out: optional preallocated tensor shaped like x.
    """
    op = "rms_norm"
    check_tensor(op, "x", x, dtypes=FLOAT_DTYPES)
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least 1 dim, got shape {tuple(x.shape)}")
    D = x.shape[-1]
    check_tensor(op, "weight", weight, shape=(D,), dtypes=FLOAT_DTYPES, allow_none=True)
    check_same_device(op, x=x, weight=weight)
    check_out(op, out, x.shape, x.dtype, x.device)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        r = reference.rms_norm_ref(x, weight, eps=eps)
        return out.copy_(r) if out is not None else r

    def kernel(x, weight):
        o = out if out is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
        w = weight.float().contiguous() if weight is not None else None
        _backend.launch(op, b, x, w, float(eps), o)
        return o

    if needs_grad(x, weight):
        return kernel_with_ref_backward(kernel, lambda x, w: reference.rms_norm_ref(x, w, eps=eps), (x, weight))
    return kernel(x, weight)


@_backend.register_fake("liveact::rms_norm_fwd")
def _rms_norm_fake(x, weight, eps, out):
    return None
