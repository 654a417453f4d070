"""causal_dwconv1d / causal_dwconv1d_update: CPU/CUDA/Triton kernels against the reference and against the
F.conv1d formulation, widths 1..7 and strides 1..5, streaming in chunks == one shot, token-by-token update ==
one shot, strided inputs, opcheck, torch.compile, grads, bad input."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref, strided
from conftest import KERNEL_BACKENDS, backend_device, require_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def conv1d_formula(x, w, b, stride, silu):
    """causal-conv1d's documented reference generalised to a stride: left-pad W-1 zeros, depthwise F.conv1d."""
    W = w.shape[-1]
    o = F.conv1d(F.pad(x.double(), (W - 1, 0)), w.double()[:, None, :], None if b is None else b.double(),
                 stride=stride, groups=x.shape[1])
    return F.silu(o) if silu else o


def _pair(x, w, b, **kw):
    ref32 = reference.causal_dwconv1d_ref(x.float(), w, b, **kw)
    lowp = reference.causal_dwconv1d_ref(x, w, b, **kw)
    return ref32, lowp


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("W,stride", [(1, 1), (2, 1), (3, 2), (4, 1), (5, 5), (6, 3), (7, 4)])
@pytest.mark.parametrize("L", [1, 113])
def test_causal_dwconv1d_fwd(backend, dtype, W, stride, L):
    dev = backend_device(backend)
    require_backend("causal_dwconv1d", backend, dev)
    x = torch.randn(2, 5, L, device=dev).to(dtype)
    w, b = torch.randn(5, W, device=dev), torch.randn(5, device=dev)
    silu = (W + L) % 2 == 0
    act = "silu" if silu else None
    got = lk.causal_dwconv1d(x, w, b, stride=stride, activation=act, backend=backend)
    assert_close_to_ref(got, *_pair(x, w, b, stride=stride, activation=act))
    if dtype == torch.float32:  # the reference itself against the F.conv1d formulation
        want = conv1d_formula(x, w, b, stride, silu).float()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("W,stride", [(2, 1), (4, 1), (5, 5), (7, 2), (3, 3)])
def test_causal_dwconv1d_streaming_equals_one_shot(backend, W, stride):
    dev = backend_device(backend)
    require_backend("causal_dwconv1d", backend, dev)
    C, chunks = 6, [stride * n for n in (1, 4, 7, 2)]
    x = torch.randn(1, C, sum(chunks), device=dev)
    w, b = torch.randn(C, W, device=dev), torch.randn(C, device=dev)
    full = lk.causal_dwconv1d(x, w, b, stride=stride, activation="silu", backend=backend)
    state, outs, p = None, [], 0
    for n in chunks:
        o, state = lk.causal_dwconv1d(x[..., p:p + n], w, b, stride=stride, activation="silu", initial_states=state,
                                      return_final_states=True, backend=backend)
        outs.append(o)
        p += n
    torch.testing.assert_close(torch.cat(outs, -1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, x[..., -(W - 1):] if W > 1 else x[..., :0])


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("W,extra", [(1, 0), (2, 0), (4, 0), (4, 3), (7, 1)])
def test_causal_dwconv1d_update_equals_one_shot(backend, dtype, W, extra):
    """Token-by-token (and chunked) updates from a zero state (state_len = W-1+extra) == the one-shot conv."""
    dev = backend_device(backend)
    require_backend("causal_dwconv1d_update", backend, dev)
    B, C, L = 2, 5, 13
    x = torch.randn(B, C, L, device=dev).to(dtype)
    w, b = torch.randn(C, W, device=dev), torch.randn(C, device=dev)
    want32, wantlp = _pair(x, w, b, activation="silu")
    state = torch.zeros(B, C, W - 1 + extra, device=dev, dtype=dtype)
    outs = [lk.causal_dwconv1d_update(x[..., i], state, w, b, "silu", backend=backend) for i in range(5)]
    outs.append(lk.causal_dwconv1d_update(x[..., 5:], state, w, b, "silu", backend=backend))
    assert_close_to_ref(torch.cat([o[..., None] for o in outs[:5]] + [outs[5]], -1), want32, wantlp)
    if W - 1 + extra:
        torch.testing.assert_close(state[..., -min(W - 1 + extra, L):], x[..., -min(W - 1 + extra, L):])


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_causal_dwconv1d_update_matches_reference_in_place(backend):
    dev = backend_device(backend)
    require_backend("causal_dwconv1d_update", backend, dev)
    x = torch.randn(2, 4, 3, device=dev)
    st = torch.randn(2, 4, 5, device=dev)
    w = torch.randn(4, 3, device=dev)
    st_ref = st.clone()
    got = lk.causal_dwconv1d_update(x, st, w, backend=backend)
    want = reference.causal_dwconv1d_update_ref(x, st_ref, w)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(st, st_ref)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_causal_dwconv1d_strided_and_empty(backend):
    dev = backend_device(backend)
    require_backend("causal_dwconv1d", backend, dev)
    base = torch.randn(2, 6, 40, device=dev).bfloat16()
    w = torch.randn(6, 4, device=dev)
    ini = torch.randn(2, 6, 3, device=dev).bfloat16()
    for x in (strided(base, dim=1), strided(base, dim=-1), base.transpose(1, 2).contiguous().transpose(1, 2)):
        assert not x.is_contiguous()
        assert_close_to_ref(lk.causal_dwconv1d(x, w, stride=2, initial_states=ini, backend=backend),
                            *_pair(x, w, None, stride=2, initial_states=ini))
    e = torch.empty(2, 6, 0, device=dev)
    assert lk.causal_dwconv1d(e, w, backend=backend).shape == (2, 6, 0)


def test_causal_dwconv1d_opcheck():
    require_backend("causal_dwconv1d", "cpu")
    x, w, b = torch.randn(2, 3, 10), torch.randn(3, 4), torch.randn(3)
    torch.library.opcheck(torch.ops.liveact.causal_dwconv1d_fwd.default,
                          (x, w, b, torch.randn(2, 3, 3), 2, "silu", torch.empty(2, 3, 5), torch.empty(2, 3, 3)))
    torch.library.opcheck(torch.ops.liveact.causal_dwconv1d_update_fwd.default,
                          (x[..., :2], torch.randn(2, 3, 3), w, b, None, torch.empty(2, 3, 2)))


def test_causal_dwconv1d_compiles_without_graph_break():
    require_backend("causal_dwconv1d", "cpu")
    x, w, st = torch.randn(1, 4, 9), torch.randn(4, 3), torch.zeros(1, 4, 2)
    st_ref = st.clone()

    def f(x, w, st):
        return lk.causal_dwconv1d(x, w, stride=3) .sum() + lk.causal_dwconv1d_update(x[..., 0], st, w).sum()

    got = torch.compile(f, fullgraph=True)(x, w, st)
    want = reference.causal_dwconv1d_ref(x, w, stride=3).sum() + reference.causal_dwconv1d_update_ref(x[..., 0], st_ref, w).sum()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st, st_ref)


def test_causal_dwconv1d_grad_through_reference():
    require_backend("causal_dwconv1d", "cpu")
    x = torch.randn(1, 3, 12, requires_grad=True)
    w = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    lk.causal_dwconv1d(x, w, b, stride=2, activation="silu", backend="cpu").square().sum().backward()
    g = [t.grad.clone() for t in (x, w, b)]
    x.grad = w.grad = b.grad = None
    reference.causal_dwconv1d_ref(x, w, b, stride=2, activation="silu").square().sum().backward()
    for a, t in zip(g, (x, w, b)):
        torch.testing.assert_close(a, t.grad)


def test_causal_dwconv1d_bad_input():
    x = torch.randn(1, 3, 12)
    with pytest.raises(ValueError, match=r"causal_dwconv1d: weight must have shape \(3, width>=1\)"):
        lk.causal_dwconv1d(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"causal_dwconv1d: initial_states must have shape \(1, 3, 2\)"):
        lk.causal_dwconv1d(x, torch.randn(3, 3), initial_states=torch.randn(1, 3, 3))
    with pytest.raises(ValueError, match="causal_dwconv1d: streaming with stride=5 needs seqlen to be a multiple"):
        lk.causal_dwconv1d(x, torch.randn(3, 3), stride=5, return_final_states=True)
    with pytest.raises(ValueError, match="causal_dwconv1d: activation must be one of"):
        lk.causal_dwconv1d(x, torch.randn(3, 3), activation="gelu")
    with pytest.raises(ValueError, match=r"causal_dwconv1d_update: conv_state must have shape \(1, 3, >=2\)"):
        lk.causal_dwconv1d_update(x[..., 0], torch.zeros(1, 3, 1), torch.randn(3, 3))


def test_silu_exp_polynomial_range_and_specials():
    # the CPU kernels' SiLU uses a vectorisable exp (cpu_expf in csrc/common/numeric.h: Cody-Waite + degree-6
    # polynomial, input clamped to [-87.3, 88.7], inf above 88.38): fp32 relative error against the fp64 reference over
    # [-100, 100] and the special values (NaN, ±inf, ±1e30, the clamp edges) placed exactly like the reference's
    v = torch.cat([torch.linspace(-100, 100, 20001),
                   torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 87.3, -87.3, 88.37, -88.37, 88.7, -88.7])])
    x = v.view(1, 1, -1)
    got = lk.causal_dwconv1d(x, torch.ones(1, 1), activation="silu", backend="cpu")
    want = reference.causal_dwconv1d_ref(x.double(), torch.ones(1, 1, dtype=torch.float64), activation="silu")
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.equal(torch.isinf(got), torch.isinf(want))
    fin = torch.isfinite(want)
    rel = ((got.double() - want).abs() / want.abs().clamp_min(1e-30))[fin]
    # measured 3.7e-7 (about 3 ulp of fp32: the polynomial and the division)
    assert rel.max().item() < 1e-6, rel.max().item()
