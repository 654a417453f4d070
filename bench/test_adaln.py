"""adaLN family (adaln_residual, adaln_modulate, gated_residual): the C++ CPU kernels against the eager PyTorch
composition each replaces (Wan's fp32 LayerNorm + modulation), with a plain copy of the same bytes as the
memory-bandwidth yardstick. LiveAct's D = 3072 (1.3B) and 5120 (14B), token counts scaled for 2 cores."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref
from _harness import copy_fn, run

SHAPES = [(1, 4096, 3072), (1, 2048, 5120)]
FRAMES = 4  # per-latent-frame modulation rows, as LiveAct's block-autoregressive chunks use
DTYPE = torch.bfloat16
EPS = 1e-6


def _sid(s):
    return "x".join(map(str, s))


def _inputs(shape):
    B, L, D = shape
    x, y = torch.randn(shape).to(DTYPE), torch.randn(shape).to(DTYPE)
    gate, shift, scale = (0.1 * torch.randn(B, FRAMES, D) for _ in range(3))
    return x, y, gate, shift, scale


def _rows(t, x):  # (B, frames, D) -> (B, L, D) fp32, materialised like the eager code does with e.chunk(...)
    B, L, D = x.shape
    return t[:, :, None, :].expand(B, t.shape[1], L // t.shape[1], D).reshape(B, L, D)


# The eager compositions the kernels replace (Wan's WanAttentionBlock: fp32 norm, modulation, bf16 stream).
def eager_gated_residual(x, y, gate):
    return (x.float() + y.float() * _rows(gate, x)).to(x.dtype)


def eager_adaln_modulate(x, shift, scale):
    n = F.layer_norm(x.float(), (x.shape[-1],), eps=EPS)
    return (n * (1 + _rows(scale, x)) + _rows(shift, x)).to(x.dtype)


def eager_adaln_residual(x, y, gate, shift, scale):
    xn = eager_gated_residual(x, y, gate)
    return xn, eager_adaln_modulate(xn, shift, scale)


# (shape, torch threads): the default threads (2 here) at both shapes, plus one 1-thread group that shows the
# per-core cost without the 2-thread runs' scheduler effects on a shared machine.
RESIDUAL_CASES = [(s, None) for s in SHAPES] + [(SHAPES[0], 1)]


@pytest.fixture
def threads(request):
    n, old = request.param, torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    yield n
    torch.set_num_threads(old)


@pytest.mark.parametrize("shape,threads", RESIDUAL_CASES, indirect=["threads"],
                         ids=[_sid(s) + (f"-{t}thread" if t else "") for s, t in RESIDUAL_CASES])
@pytest.mark.parametrize("provider", ["eager", "cpu", "copy"])
def test_adaln_residual(benchmark, provider, shape, threads):
    x, y, g, sh, sc = _inputs(shape)
    nbytes = 4 * x.numel() * x.element_size()  # read x, y; write x_new, out
    if provider == "cpu":
        xn, o = lk.adaln_residual(x, y, g, sh, sc, eps=EPS, backend="cpu")
        rx32, ro32 = reference.adaln_residual_ref(x.float(), y.float(), g, sh, sc, eps=EPS)
        rx, ro = reference.adaln_residual_ref(x, y, g, sh, sc, eps=EPS)
        assert_close_to_ref(xn, rx32, rx)  # the tests' rule: error <= 2x that of the same-precision reference
        assert_close_to_ref(o, ro32, ro)
        xo, out = torch.empty_like(x), torch.empty_like(x)
        fn, role = (lambda: lk.adaln_residual(x, y, g, sh, sc, eps=EPS, x_out=xo, out=out, backend="cpu")), "kernel"
    elif provider == "eager":
        fn, role = (lambda: eager_adaln_residual(x, y, g, sh, sc)), "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="adaln_residual", provider=provider,
        shape=_sid(shape) + (f" ({threads} thread)" if threads else ""), dtype=DTYPE, bytes_moved=nbytes, role=role)


@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("provider", ["eager", "cpu", "copy"])
def test_adaln_modulate(benchmark, provider, shape):
    x, _, _, sh, sc = _inputs(shape)
    nbytes = 2 * x.numel() * x.element_size()
    if provider == "cpu":
        assert_close_to_ref(lk.adaln_modulate(x, sh, sc, eps=EPS, backend="cpu"),
                            reference.adaln_modulate_ref(x.float(), sh, sc, eps=EPS),
                            reference.adaln_modulate_ref(x, sh, sc, eps=EPS))
        out = torch.empty_like(x)
        fn, role = (lambda: lk.adaln_modulate(x, sh, sc, eps=EPS, out=out, backend="cpu")), "kernel"
    elif provider == "eager":
        fn, role = (lambda: eager_adaln_modulate(x, sh, sc)), "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="adaln_modulate", provider=provider, shape=_sid(shape), dtype=DTYPE, bytes_moved=nbytes,
        role=role)


@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("provider", ["eager", "cpu", "copy"])
def test_gated_residual(benchmark, provider, shape):
    x, y, g, _, _ = _inputs(shape)
    nbytes = 3 * x.numel() * x.element_size()
    if provider == "cpu":
        assert_close_to_ref(lk.gated_residual(x, y, g, backend="cpu"), reference.gated_residual_ref(x.float(), y.float(), g),
                            reference.gated_residual_ref(x, y, g))
        out = torch.empty_like(x)
        fn, role = (lambda: lk.gated_residual(x, y, g, out=out, backend="cpu")), "kernel"
    elif provider == "eager":
        fn, role = (lambda: eager_gated_residual(x, y, g)), "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="gated_residual", provider=provider, shape=_sid(shape), dtype=DTYPE, bytes_moved=nbytes,
        role=role)
