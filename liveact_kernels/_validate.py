"""Input checks shared by the public ops: every error names the op, the argument, the expected and the actual."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _fmt_dtypes(dtypes):
    return "/".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(op, name, t, *, ndim=None, dtypes=None, shape=None, allow_none=False):
    """Checks that t is a tensor with the given rank, dtype and shape (None entries in shape match anything)."""
    if t is None:
        if allow_none:
            return
        raise TypeError(f"{op}: {name} must be a tensor, got None")
    if not torch.is_tensor(t):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        nd = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in nd:
            want = " or ".join(f"{n}-D" for n in nd)
            raise ValueError(f"{op}: {name} must be {want}, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{op}: {name} must have dtype {_fmt_dtypes(dtypes)}, got {str(t.dtype).replace('torch.', '')}")
    if shape is not None:
        if len(shape) != t.dim() or any(s is not None and s != a for s, a in zip(shape, t.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{op}: {name} must have shape {want}, got {tuple(t.shape)}")


def check_same_device(op, **tensors):
    devs = {n: t.device for n, t in tensors.items() if t is not None}
    if len({str(d) for d in devs.values()}) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devs.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listing}")


def check_out(op, out, shape, dtype, device, name="out"):
    if out is None:
        return
    check_tensor(op, name, out, dtypes=(dtype,), shape=tuple(shape))
    if out.device != device:
        raise ValueError(f"{op}: {name} must be on {device}, got {out.device}")


def check_choice(op, name, value, choices):
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {tuple(choices)}, got {value!r}")


def check_modulation(op, name, t, x):
    """shift/scale/gate: (batch, dim), (batch, 1, dim) or (batch, frames, dim) with seqlen % frames == 0."""
    check_tensor(op, name, t, ndim=(2, 3), dtypes=FLOAT_DTYPES)
    B, L, D = x.shape
    if t.shape[0] not in (B, 1) or t.shape[-1] != D:
        raise ValueError(f"{op}: {name} must have shape ({B}, {D}), ({B}, 1, {D}) or ({B}, frames, {D}) "
                         f"for x of shape {tuple(x.shape)}, got {tuple(t.shape)}")
    if t.dim() == 3 and t.shape[1] > 0 and L % t.shape[1] != 0:
        raise ValueError(f"{op}: {name} has {t.shape[1]} frames, which does not divide x's seqlen {L} "
                         f"(x {tuple(x.shape)}, {name} {tuple(t.shape)})")
