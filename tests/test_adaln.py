"""adaln_modulate, gated_residual, adaln_residual: every kernel backend against the fp32 reference (per-sample and
per-frame modulation, LayerNorm/RMS, affine), strided inputs, NaN-prefilled outputs, empty, opcheck,
torch.compile, grads through the reference, bad input."""
import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref, nan_like, strided
from conftest import KERNEL_BACKENDS, backend_device, require_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (batch, seqlen, dim): 1 channel, primes, the Wan 1.3B/14B widths and a non-power-of-two 1170.
SHAPES = [(1, 1, 1), (1, 7, 113), (2, 6, 1024), (1, 6, 1170), (1, 4, 5120)]
# How shift/scale/gate are given: (batch, dim), (batch, 1, dim), (batch, frames, dim), or (1, dim) broadcast.
MODS = ("sample2d", "sample3d", "frame", "bcast")


def _mod(kind, B, L, D, dev):
    if kind == "sample2d":
        return torch.randn(B, D, device=dev)
    if kind == "sample3d":
        return torch.randn(B, 1, D, device=dev)
    if kind == "bcast":
        return torch.randn(1, D, device=dev)
    frames = next(f for f in (3, 2, 1) if L % f == 0)
    return torch.randn(B, frames, D, device=dev)


def _f32(*ts):
    return [None if t is None else t.float() for t in ts]


def _fp32_atol(out_ref, shift, x):
    """Extra atol for fp32 outputs of the modulated norm, which have no lower-precision yardstick
    (ref_lowp == ref32). out = n * (1 + scale) + shift can cancel, so its rounding error scales with
    |n * (1 + scale)| + |shift|, not with |out|; rstd from a long fp32 sum differs from the reference's by
    summation order (~1e-7 relative). Measured: 5.8e-7 at out = -0.045 for D=5120 RMS (|terms| ~ 3), i.e.
    ~2e-7 relative to the terms; we allow 2^-21 (4.8e-7) of them. Zero for bf16/fp16."""
    if out_ref.dtype != torch.float32 or out_ref.numel() == 0:
        return None
    sh = reference.modulation_rows(shift, x).abs()
    return 2.0 ** -21 * ((out_ref.float() - reference.modulation_rows(shift, x)).abs() + sh).max().item()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mod", MODS)
@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_adaln_residual_fwd(backend, dtype, shape, mod, norm):
    dev = backend_device(backend)
    require_backend("adaln_residual", backend, dev)
    B, L, D = shape
    x = torch.randn(shape, device=dev).to(dtype)
    y = torch.randn(shape, device=dev).to(dtype)
    gate, shift, scale = (_mod(mod, B, L, D, dev) for _ in range(3))
    x_out, out = nan_like(x), nan_like(x)
    xn, o = lk.adaln_residual(x, y, gate, shift, scale, norm=norm, x_out=x_out, out=out, backend=backend)
    assert xn is x_out and o is out
    # fp32 oracle on the same (rounded) inputs; the same-precision reference rounds like the kernel must.
    rx32, ro32 = reference.adaln_residual_ref(*_f32(x, y), gate, shift, scale, norm=norm)
    rxl, rol = reference.adaln_residual_ref(x, y, gate, shift, scale, norm=norm)
    assert_close_to_ref(xn, rx32, rxl)
    assert_close_to_ref(o, ro32, rol, atol=_fp32_atol(ro32, shift, x))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mod", ["sample2d", "frame"])
@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("affine", ["none", "weight", "weight_bias"])
def test_adaln_modulate_fwd(backend, dtype, shape, mod, norm, affine):
    dev = backend_device(backend)
    require_backend("adaln_modulate", backend, dev)
    B, L, D = shape
    x = torch.randn(shape, device=dev).to(dtype)
    shift, scale = _mod(mod, B, L, D, dev), _mod(mod, B, L, D, dev)
    w = torch.randn(D, device=dev).to(dtype) if affine != "none" else None
    b = torch.randn(D, device=dev).to(dtype) if affine == "weight_bias" else None
    out = nan_like(x)
    got = lk.adaln_modulate(x, shift, scale, norm=norm, weight=w, bias=b, out=out, backend=backend)
    assert got is out
    ref32 = reference.adaln_modulate_ref(x.float(), shift, scale, norm=norm, weight=w, bias=b)
    lowp = reference.adaln_modulate_ref(x, shift, scale, norm=norm, weight=w, bias=b)
    assert_close_to_ref(got, ref32, lowp, atol=_fp32_atol(ref32, shift, x))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mod", MODS)
def test_gated_residual_fwd(backend, dtype, shape, mod):
    dev = backend_device(backend)
    require_backend("gated_residual", backend, dev)
    B, L, D = shape
    x = torch.randn(shape, device=dev).to(dtype)
    y = torch.randn(shape, device=dev).to(dtype)
    gate = _mod(mod, B, L, D, dev)
    out = nan_like(x)
    got = lk.gated_residual(x, y, gate, out=out, backend=backend)
    assert got is out
    assert_close_to_ref(got, reference.gated_residual_ref(*_f32(x, y), gate), reference.gated_residual_ref(x, y, gate))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))  # torch: the public reference path
@pytest.mark.parametrize("layout", ["padded_rows", "transposed"])
def test_adaln_strided_inputs_and_outputs(backend, layout):
    """Padded rows are read in place (row strides), a non-unit channel stride goes through a copy; a
    non-contiguous out is written through a temporary."""
    dev = backend_device(backend)
    require_backend("adaln_residual", backend, dev)
    B, L, D = 2, 6, 257
    if layout == "padded_rows":
        x = strided(torch.randn(B, L, D, device=dev).bfloat16(), dim=-1)
        y = strided(torch.randn(B, L, D, device=dev).bfloat16(), dim=1)
    else:
        x = torch.randn(B, D, L, device=dev).bfloat16().transpose(1, 2)
        y = torch.randn(L, B, D, device=dev).bfloat16().transpose(0, 1)
    assert not x.is_contiguous() and not y.is_contiguous()
    gate, shift, scale = (torch.randn(B, 3, D, device=dev) for _ in range(3))
    out = torch.full((B, D, L), float("nan"), device=dev, dtype=x.dtype).transpose(1, 2)  # non-contiguous out
    xn, o = lk.adaln_residual(x, y, gate, shift, scale, out=out, backend=backend)
    assert o is out
    rx32, ro32 = reference.adaln_residual_ref(x.float(), y.float(), gate, shift, scale)
    rxl, rol = reference.adaln_residual_ref(x, y, gate, shift, scale)
    assert_close_to_ref(xn, rx32, rxl)
    assert_close_to_ref(o, ro32, rol)
    got = lk.adaln_modulate(x, shift, scale, backend=backend)
    assert_close_to_ref(got, reference.adaln_modulate_ref(x.float(), shift, scale),
                        reference.adaln_modulate_ref(x, shift, scale))
    g = lk.gated_residual(x, y, gate, backend=backend)
    assert_close_to_ref(g, rx32, rxl)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_adaln_mixed_frame_counts(backend):
    """gate per sample, shift with 2 frames, scale with 3 frames (seqlen 12): the wrapper brings all three to
    lcm = 6 frames for the kernel; every token must still get its own rows."""
    dev = backend_device(backend)
    require_backend("adaln_residual", backend, dev)
    B, L, D = 2, 12, 136
    x, y = (torch.randn(B, L, D, device=dev).bfloat16() for _ in range(2))
    gate, shift, scale = torch.randn(B, D, device=dev), torch.randn(B, 2, D, device=dev), torch.randn(B, 3, D, device=dev)
    xn, o = lk.adaln_residual(x, y, gate, shift, scale, backend=backend)
    rx32, ro32 = reference.adaln_residual_ref(x.float(), y.float(), gate, shift, scale)
    rxl, rol = reference.adaln_residual_ref(x, y, gate, shift, scale)
    assert_close_to_ref(xn, rx32, rxl)
    assert_close_to_ref(o, ro32, rol)
    m = lk.adaln_modulate(x, shift, scale, norm="rms", backend=backend)
    assert_close_to_ref(m, reference.adaln_modulate_ref(x.float(), shift, scale, norm="rms"),
                        reference.adaln_modulate_ref(x, shift, scale, norm="rms"))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))  # torch: the public reference path
@pytest.mark.parametrize("shape", [(0, 4, 64), (2, 0, 64), (2, 4, 0)])
def test_adaln_empty(backend, shape):
    dev = backend_device(backend)
    require_backend("adaln_residual", backend, dev)
    x = torch.randn(shape, device=dev)
    m = torch.randn(shape[0], shape[2], device=dev)
    xn, o = lk.adaln_residual(x, x, m, m, m, backend=backend)
    assert xn.shape == o.shape == shape
    assert lk.adaln_modulate(x, m, m, backend=backend).shape == shape
    assert lk.gated_residual(x, x, m, backend=backend).shape == shape


def test_adaln_non_finite_propagates():
    """A NaN/inf in one row poisons that row only (the norm's statistics), as in the reference."""
    require_backend("adaln_residual", "cpu")
    x = torch.randn(1, 4, 64).bfloat16()
    x[0, 1, 5] = float("nan")
    x[0, 2, 7] = float("inf")
    m = torch.zeros(1, 64)
    xn, o = lk.adaln_residual(x, torch.zeros_like(x), m, m, m, backend="cpu")
    rx, ro = reference.adaln_residual_ref(x, torch.zeros_like(x), m, m, m)
    assert torch.equal(torch.isnan(o), torch.isnan(ro)) and torch.isnan(o[0, 1]).all() and torch.isnan(o[0, 2]).all()
    assert torch.isfinite(o[0, 0]).all() and torch.isfinite(o[0, 3]).all()
    torch.testing.assert_close(xn, rx, rtol=0, atol=0, equal_nan=True)


def _op_args(B=2, L=6, D=48, frames=3):
    x, y = torch.randn(B, L, D), torch.randn(B, L, D)
    g, sh, sc = (torch.randn(B, frames, D) for _ in range(3))
    return x, y, g, sh, sc, torch.randn(D), torch.randn(D)


def test_adaln_opcheck():
    require_backend("adaln_residual", "cpu")
    x, y, g, sh, sc, w, b = _op_args()
    e = torch.empty_like
    torch.library.opcheck(torch.ops.liveact.adaln_modulate_fwd.default, (x, sh, sc, w, b, 1e-6, False, e(x)))
    torch.library.opcheck(torch.ops.liveact.adaln_modulate_fwd.default, (x, sh, sc, None, None, 1e-6, True, e(x)))
    torch.library.opcheck(torch.ops.liveact.gated_residual_fwd.default, (x, y, g, e(x)))
    torch.library.opcheck(torch.ops.liveact.adaln_residual_fwd.default,
                          (x, y, g, sh, sc, w, None, 1e-6, False, e(x), e(x)))


def test_adaln_compiles_without_graph_break():
    require_backend("adaln_residual", "cpu")
    x, y, g, sh, sc, w, b = _op_args()

    def block(x, y, g, sh, sc):
        xn, h = lk.adaln_residual(x, y, g, sh, sc)
        return lk.gated_residual(xn, lk.adaln_modulate(h, sh, sc, norm="rms"), g)

    def block_ref(x, y, g, sh, sc):
        xn, h = reference.adaln_residual_ref(x, y, g, sh, sc)
        return reference.gated_residual_ref(xn, reference.adaln_modulate_ref(h, sh, sc, norm="rms"), g)

    f = torch.compile(block, fullgraph=True, backend="inductor")
    torch.testing.assert_close(f(x, y, g, sh, sc), block_ref(x, y, g, sh, sc), rtol=1e-5, atol=1e-5)


def test_adaln_grads_through_reference():
    require_backend("adaln_residual", "cpu")
    x, y, g, sh, sc, w, b = (t.requires_grad_() for t in _op_args(D=32))

    def loss(fn_res, fn_mod):
        xn, o = fn_res(x, y, g, sh, sc)
        return (xn.square().sum() + o.sin().sum() + fn_mod(o, sh, sc).square().mean())

    ours = loss(lambda *a: lk.adaln_residual(*a, weight=w, bias=b, backend="cpu"),
                lambda *a: lk.adaln_modulate(*a, norm="rms", backend="cpu"))
    g_ours = torch.autograd.grad(ours, (x, y, g, sh, sc, w, b))
    ref = loss(lambda *a: reference.adaln_residual_ref(*a, weight=w, bias=b),
               lambda *a: reference.adaln_modulate_ref(*a, norm="rms"))
    g_ref = torch.autograd.grad(ref, (x, y, g, sh, sc, w, b))
    for a, r in zip(g_ours, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)
    gx = torch.autograd.grad(lk.gated_residual(x, y, g, backend="cpu").sum(), (y,))[0]
    torch.testing.assert_close(gx, g.detach().repeat_interleave(2, dim=1))


def test_adaln_bad_input():
    x = torch.randn(2, 6, 64)
    m = torch.randn(2, 64)
    with pytest.raises(ValueError, match=r"adaln_modulate: shift must have shape \(2, 64\), \(2, 1, 64\) or "
                                         r"\(2, frames, 64\) for x of shape \(2, 6, 64\), got \(2, 32\)"):
        lk.adaln_modulate(x, torch.randn(2, 32), m)
    with pytest.raises(ValueError, match=r"adaln_residual: gate has 4 frames, which does not divide x's seqlen 6"):
        lk.adaln_residual(x, x, torch.randn(2, 4, 64), m, m)
    with pytest.raises(ValueError, match=r"gated_residual: y must have shape \(2, 6, 64\), got \(2, 6, 63\)"):
        lk.gated_residual(x, torch.randn(2, 6, 63), m)
    with pytest.raises(ValueError, match=r"adaln_modulate: x must be 3-D, got shape \(6, 64\)"):
        lk.adaln_modulate(x[0], m, m)
    with pytest.raises(TypeError, match="adaln_residual: x must have dtype float32/bfloat16/float16, got int32"):
        lk.adaln_residual(x.int(), x, m, m, m)
    with pytest.raises(ValueError, match=r"adaln_modulate: norm must be one of \('layer', 'rms'\), got 'batch'"):
        lk.adaln_modulate(x, m, m, norm="batch")
    with pytest.raises(ValueError, match=r"adaln_modulate: weight must have shape \(64\), got \(65,\)"):
        lk.adaln_modulate(x, m, m, weight=torch.randn(65))
    with pytest.raises(ValueError, match=r"adaln_residual: out must have shape \(2, 6, 64\), got \(2, 6, 32\)"):
        lk.adaln_residual(x, x, m, m, m, out=torch.empty(2, 6, 32))
    with pytest.raises(TypeError, match="gated_residual: out must have dtype bfloat16, got float32"):
        lk.gated_residual(x.bfloat16(), x.bfloat16(), m, out=torch.empty(2, 6, 64))
