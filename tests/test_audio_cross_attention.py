"""audio_cross_attention: kernels against the per-frame fp32 reference (FA3 rule), frame offsets, first-frame
zeroing, strided inputs, NaN-prefilled outputs, the batched-SDPA formulation, empty input, opcheck,
torch.compile, bad input."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref, strided
from conftest import KERNEL_BACKENDS, backend_device, require_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (batch, frames T, frame_len, heads, head_dim, F_audio, frame_offset)
SHAPES = [(1, 1, 1, 1, 64, 1, 0), (1, 3, 7, 2, 128, 5, 2), (2, 2, 113, 3, 64, 2, 0), (1, 2, 1170, 2, 128, 4, 1),
          (1, 2, 300, 2, 40, 2, 0)]
N_A = 32


def _ref64(q, k, v, fl, off, zero_first):
    """The float64 truth: each query frame j attends to the N_a tokens of audio frame off + j."""
    B, L, H, Dh = q.shape
    T = L // fl
    qd = q.double().reshape(B, T, fl, H, Dh)
    kd, vd = k[:, off: off + T].double(), v[:, off: off + T].double()
    p = torch.softmax(torch.einsum("btqhd,btkhd->bthqk", qd, kd) * Dh ** -0.5, dim=-1)
    o = torch.einsum("bthqk,btkhd->btqhd", p, vd)
    if zero_first and T:
        o[:, 0] = 0
    return o.reshape(B, L, H, Dh)


def _inputs(B, T, fl, H, Dh, Fa, dtype, dev):
    q = torch.randn(B, T * fl, H, Dh, device=dev).to(dtype)
    k = torch.randn(B, Fa, N_A, H, Dh, device=dev).to(dtype)
    v = torch.randn(B, Fa, N_A, H, Dh, device=dev).to(dtype)
    return q, k, v


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("zero_first", [False, True])
def test_audio_cross_attention_fwd(backend, dtype, shape, zero_first):
    dev = backend_device(backend)
    require_backend("audio_cross_attention", backend, dev)
    B, T, fl, H, Dh, Fa, off = shape
    q, k, v = _inputs(B, T, fl, H, Dh, Fa, dtype, dev)
    out = lk.audio_cross_attention(q, k, v, frame_len=fl, frame_offset=off, zero_first_frame=zero_first,
                                   backend=backend)
    ref = _ref64(q, k, v, fl, off, zero_first)
    lowp = reference.audio_cross_attention_ref(q, k, v, frame_len=fl, frame_offset=off, zero_first_frame=zero_first)
    assert out.dtype == dtype and out.shape == q.shape
    assert_close_to_ref(out, ref, lowp)
    if zero_first:
        assert torch.equal(out[:, :fl], torch.zeros_like(out[:, :fl]))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_audio_cross_attention_strided(backend):
    dev = backend_device(backend)
    require_backend("audio_cross_attention", backend, dev)
    q, k, v = _inputs(1, 3, 57, 4, 64, 4, torch.bfloat16, dev)
    qs, ks, vs = strided(q, dim=2, pad=2), strided(k, dim=3, pad=3), strided(v, dim=2, pad=2)
    assert not (qs.is_contiguous() or ks.is_contiguous() or vs.is_contiguous())
    out = lk.audio_cross_attention(qs, ks, vs, frame_len=57, frame_offset=1, backend=backend)
    lowp = reference.audio_cross_attention_ref(q, k, v, frame_len=57, frame_offset=1)
    assert_close_to_ref(out, _ref64(q, k, v, 57, 1, False), lowp)


def test_audio_cross_attention_op_writes_nan_prefilled_out():
    require_backend("audio_cross_attention", "cpu")
    q, k, v = _inputs(1, 2, 77, 3, 128, 2, torch.bfloat16, "cpu")
    out = torch.full_like(q, float("nan"))
    torch.ops.liveact.audio_cross_attention_fwd(q, k, v, 77, 0, True, 128 ** -0.5, out)
    assert_close_to_ref(out, _ref64(q, k, v, 77, 0, True),
                        reference.audio_cross_attention_ref(q, k, v, frame_len=77, zero_first_frame=True))
    buf = torch.full((1, 154, 5, 128), float("nan"), dtype=torch.bfloat16)
    out2 = buf[:, :, 1:4]  # written through its strides
    torch.ops.liveact.audio_cross_attention_fwd(q, k, v, 77, 0, True, 128 ** -0.5, out2)
    assert torch.equal(out2, out) and buf[:, :, 0].isnan().all() and buf[:, :, 4].isnan().all()


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_audio_cross_attention_out_buffer(backend):
    require_backend("audio_cross_attention", backend)
    q, k, v = _inputs(1, 2, 30, 3, 64, 2, torch.bfloat16, "cpu")
    buf = torch.full((1, 60, 5, 64), float("nan"), dtype=torch.bfloat16)
    out = buf[:, :, 1:4]
    got = lk.audio_cross_attention(q, k, v, frame_len=30, out=out, backend=backend)
    assert got is out and buf[:, :, 0].isnan().all()
    assert_close_to_ref(out, _ref64(q, k, v, 30, 0, False), reference.audio_cross_attention_ref(q, k, v, frame_len=30))
    with pytest.raises(TypeError, match="audio_cross_attention: out must have dtype float32, got bfloat16"):
        lk.audio_cross_attention(q.float(), k.float(), v.float(), frame_len=30, out=out, backend=backend)


def test_audio_cross_attention_matches_batched_sdpa():
    """The official formulation: batch = frames, q viewed as [T, H, fl, Dh], K/V the frames' 32 tokens."""
    require_backend("audio_cross_attention", "cpu")
    T, fl, H, Dh = 3, 45, 4, 128
    q, k, v = _inputs(1, T, fl, H, Dh, 5, torch.float32, "cpu")
    sdpa = F.scaled_dot_product_attention(q.view(T, fl, H, Dh).transpose(1, 2), k[0, 2:5].transpose(1, 2),
                                          v[0, 2:5].transpose(1, 2)).transpose(1, 2).reshape(1, T * fl, H, Dh)
    got = lk.audio_cross_attention(q, k, v, frame_len=fl, frame_offset=2, backend="cpu")
    torch.testing.assert_close(got, sdpa, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_audio_cross_attention_empty(backend):
    require_backend("audio_cross_attention", backend)
    q = torch.randn(1, 0, 2, 64)
    k = torch.randn(1, 3, N_A, 2, 64)
    assert lk.audio_cross_attention(q, k, k, frame_len=5, backend=backend).shape == q.shape


def test_audio_cross_attention_opcheck():
    require_backend("audio_cross_attention", "cpu")
    q, k, v = _inputs(1, 2, 9, 2, 64, 3, torch.bfloat16, "cpu")
    torch.library.opcheck(torch.ops.liveact.audio_cross_attention_fwd.default,
                          (q, k, v, 9, 1, True, 0.125, torch.empty_like(q)))


def test_audio_cross_attention_compiles_without_graph_break():
    require_backend("audio_cross_attention", "cpu")
    q, k, v = _inputs(1, 2, 16, 2, 64, 3, torch.float32, "cpu")
    f = torch.compile(lambda q, k, v: lk.audio_cross_attention(q, k, v, frame_len=16, frame_offset=1) + 1,
                      fullgraph=True, backend="inductor")
    ref = reference.audio_cross_attention_ref(q, k, v, frame_len=16, frame_offset=1) + 1
    torch.testing.assert_close(f(q, k, v), ref, rtol=1e-5, atol=1e-5)


def test_audio_cross_attention_bad_input():
    q = torch.randn(1, 20, 2, 64)
    k = torch.randn(1, 3, N_A, 2, 64)
    with pytest.raises(ValueError, match="audio_cross_attention: frame_len must be a positive int dividing q's "
                                         "seqlen 20, got 7"):
        lk.audio_cross_attention(q, k, k, frame_len=7)
    with pytest.raises(ValueError, match=r"audio_cross_attention: query frames \[2, 4\) need audio frames that k "
                                         r"has \(F_audio = 3\)"):
        lk.audio_cross_attention(q, k, k, frame_len=10, frame_offset=2)
    with pytest.raises(TypeError, match="audio_cross_attention: k must have dtype float32, got bfloat16"):
        lk.audio_cross_attention(q, k.bfloat16(), k, frame_len=10)
    with pytest.raises(ValueError, match=r"audio_cross_attention: k and v must have shape \(1, F_audio, N_a, 2, "
                                         r"64\); got k \(1, 3, 32, 3, 64\)"):
        lk.audio_cross_attention(q, torch.randn(1, 3, N_A, 3, 64), torch.randn(1, 3, N_A, 3, 64), frame_len=10)
    with pytest.raises(ValueError, match=r"audio_cross_attention: k must be 5-D, got shape \(1, 3, 2, 64\)"):
        lk.audio_cross_attention(q, k[:, :, 0], k, frame_len=10)


def test_audio_cross_attention_grad_through_reference():
    require_backend("audio_cross_attention", "cpu")
    q, k, v = (t.requires_grad_() for t in _inputs(1, 2, 9, 2, 64, 3, torch.float32, "cpu"))
    lk.audio_cross_attention(q, k, v, frame_len=9, frame_offset=1, backend="cpu").square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    reference.audio_cross_attention_ref(q, k, v, frame_len=9, frame_offset=1).square().sum().backward()
    for g, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(g, t.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="audio_cross_attention: out= cannot be used when q, k or v requires grad"):
        lk.audio_cross_attention(q, k, v, frame_len=9, out=torch.empty(q.shape), backend="cpu")
