"""Fused adaLN ops of the DiT block: adaln_modulate, gated_residual and adaln_residual (the hot path
x + y*gate -> norm -> modulate in one pass). Math in fp32, I/O in x.dtype."""
from __future__ import annotations

import math

import torch

from . import _backend, reference
from ._autograd import kernel_with_ref_backward, needs_grad
from ._validate import FLOAT_DTYPES, check_choice, check_modulation, check_out, check_same_device, check_tensor


def _mod3(t: torch.Tensor, B: int, frames: int | None = None) -> torch.Tensor:
    """shift/scale/gate -> contiguous fp32 (batch, frames, dim) for the kernels, which take one frame count:
    a tensor with fewer frames (per-sample: 1) has each of its rows repeated frames / own_frames times, which
    keeps every token on the same modulation row (token l uses row l // (seqlen / frames))."""
    t = t[:, None, :] if t.dim() == 2 else t
    t = t.float().expand(B, t.shape[1], t.shape[2])
    if frames is not None and frames != t.shape[1] and t.shape[1] > 0:
        t = t.repeat_interleave(frames // t.shape[1], dim=1)
    return t.contiguous()


def _frames(*ts) -> int:
    """The common frame count of modulation tensors: the lcm of theirs (each divides seqlen, so the lcm does)."""
    f = 1
    for t in ts:
        n = 1 if t.dim() == 2 else t.shape[1]
        f = f * n // math.gcd(f, n) if n > 0 else f
    return f


def _affine(op, name, t, D, device):
    if t is None:
        return None
    check_tensor(op, name, t, shape=(D,), dtypes=FLOAT_DTYPES)
    if t.device != device:
        raise ValueError(f"{op}: {name} must be on {device} like x, got {t.device}")
    return t.float().contiguous()


def _check_x(op, x):
    check_tensor(op, "x", x, ndim=3, dtypes=FLOAT_DTYPES)


def adaln_modulate(x, shift, scale, *, eps=1e-6, norm="layer", weight=None, bias=None, out=None, backend="auto"):
    """norm(x) * (1 + scale) + shift, norm in fp32, cast to x.dtype.

    x: (batch, seqlen, dim); shift, scale: (batch, dim) / (batch, 1, dim) per sample, or (batch, frames, dim)
    per latent frame with seqlen = frames * frame_len; norm: "layer" | "rms"; weight/bias: optional (dim,)
    affine of the norm. out: optional preallocated (batch, seqlen, dim) tensor of x.dtype.
    """
    op = "adaln_modulate"
    _check_x(op, x)
    check_modulation(op, "shift", shift, x)
    check_modulation(op, "scale", scale, x)
    check_choice(op, "norm", norm, ("layer", "rms"))
    check_same_device(op, x=x, shift=shift, scale=scale, weight=weight, bias=bias)
    check_out(op, out, x.shape, x.dtype, x.device)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        r = reference.adaln_modulate_ref(x, shift, scale, eps=eps, norm=norm, weight=weight, bias=bias)
        return out.copy_(r) if out is not None else r
    B, L, D = x.shape

    def kernel(x, shift, scale, weight, bias):
        o = out if out is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
        Fm = _frames(shift, scale)
        _backend.launch(op, b, x, _mod3(shift, B, Fm), _mod3(scale, B, Fm), _affine(op, "weight", weight, D, x.device),
                        _affine(op, "bias", bias, D, x.device), float(eps), norm == "rms", o)
        return o

    if needs_grad(x, shift, scale, weight, bias):
        return kernel_with_ref_backward(
            kernel, lambda x, sh, sc, w, bi: reference.adaln_modulate_ref(x, sh, sc, eps=eps, norm=norm, weight=w,
                                                                          bias=bi),
            (x, shift, scale, weight, bias))
    return kernel(x, shift, scale, weight, bias)


def gated_residual(x, y, gate, *, out=None, backend="auto"):
    """x + y * gate in fp32, cast to x.dtype. x, y: (batch, seqlen, dim); gate shaped like adaln's shift."""
    op = "gated_residual"
    _check_x(op, x)
    check_tensor(op, "y", y, shape=tuple(x.shape), dtypes=FLOAT_DTYPES)
    check_modulation(op, "gate", gate, x)
    check_same_device(op, x=x, y=y, gate=gate)
    check_out(op, out, x.shape, x.dtype, x.device)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        r = reference.gated_residual_ref(x, y, gate)
        return out.copy_(r) if out is not None else r
    B = x.shape[0]

    def kernel(x, y, gate):
        o = out if out is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
        _backend.launch(op, b, x, y, _mod3(gate, B), o)
        return o

    if needs_grad(x, y, gate):
        return kernel_with_ref_backward(kernel, reference.gated_residual_ref, (x, y, gate))
    return kernel(x, y, gate)


def adaln_residual(x, y, gate, shift, scale, *, eps=1e-6, norm="layer", weight=None, bias=None, x_out=None,
                   out=None, backend="auto"):
    """(x_new, adaln_modulate(x_new, shift, scale)) with x_new = x + y * gate, in one pass over x and y.

    x, y: (batch, seqlen, dim); gate, shift, scale: (batch, dim), (batch, 1, dim) or (batch, frames, dim).
    Returns (x_new, modulated), both (batch, seqlen, dim) in x.dtype.
    """
    op = "adaln_residual"
    _check_x(op, x)
    check_tensor(op, "y", y, shape=tuple(x.shape), dtypes=FLOAT_DTYPES)
    for n, t in (("gate", gate), ("shift", shift), ("scale", scale)):
        check_modulation(op, n, t, x)
    check_choice(op, "norm", norm, ("layer", "rms"))
    check_same_device(op, x=x, y=y, gate=gate, shift=shift, scale=scale, weight=weight, bias=bias)
    check_out(op, x_out, x.shape, x.dtype, x.device, name="x_out")
    check_out(op, out, x.shape, x.dtype, x.device)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        xn, r = reference.adaln_residual_ref(x, y, gate, shift, scale, eps=eps, norm=norm, weight=weight, bias=bias)
        if x_out is not None:
            xn = x_out.copy_(xn)
        return xn, (out.copy_(r) if out is not None else r)
    B, L, D = x.shape

    def kernel(x, y, gate, shift, scale, weight, bias):
        xo = x_out if x_out is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
        o = out if out is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
        Fm = _frames(gate, shift, scale)
        _backend.launch(op, b, x, y, _mod3(gate, B, Fm), _mod3(shift, B, Fm), _mod3(scale, B, Fm),
                        _affine(op, "weight", weight, D, x.device), _affine(op, "bias", bias, D, x.device),
                        float(eps), norm == "rms", xo, o)
        return xo, o

    if needs_grad(x, y, gate, shift, scale, weight, bias):
        return kernel_with_ref_backward(
            kernel, lambda x, y, g, sh, sc, w, bi: reference.adaln_residual_ref(x, y, g, sh, sc, eps=eps, norm=norm,
                                                                                weight=w, bias=bi),
            (x, y, gate, shift, scale, weight, bias))
    return kernel(x, y, gate, shift, scale, weight, bias)


@_backend.register_fake("liveact::adaln_modulate_fwd")
def _adaln_modulate_fake(x, shift, scale, weight, bias, eps, rms, out):
    return None


@_backend.register_fake("liveact::gated_residual_fwd")
def _gated_residual_fake(x, y, gate, out):
    return None


@_backend.register_fake("liveact::adaln_residual_fwd")
def _adaln_residual_fake(x, y, gate, shift, scale, weight, bias, eps, rms, x_out, out):
    return None
