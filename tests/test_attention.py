"""attention / sageattn: kernels against the fp32 reference (FA3 rule), GQA, bottom-right causal, LSE, FP8 K/V
with per-(token, head) scales, strided inputs, NaN-prefilled outputs, empty K, opcheck, torch.compile, bad input."""
import inspect

import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref, assert_fp8_close, strided
from conftest import KERNEL_BACKENDS, backend_device, require_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FP8 = torch.float8_e4m3fn
# (batch, q heads, kv heads, Nq, Nk, head_dim): awkward lengths of FA3's tests, GQA/MQA, Dh 40/64/128
SHAPES = [(1, 2, 2, 1, 1, 64), (2, 4, 2, 7, 113, 128), (1, 3, 1, 239, 1023, 64), (1, 2, 1, 113, 239, 40),
          (1, 1, 1, 1170, 1023, 128), (1, 2, 2, 1023, 7, 128)]


def _qkv(B, Hq, Hk, Nq, Nk, Dh, dtype, layout, dev):
    def mk(H, N):
        shape = (B, H, N, Dh) if layout == "HND" else (B, N, H, Dh)
        return torch.randn(shape, device=dev).to(dtype)
    return mk(Hq, Nq), mk(Hk, Nk), mk(Hk, Nk)


def _ref(q, k, v, layout, causal, ks=None, vs=None, f32=True):
    """f32=True: the float64 truth (out cast to fp64, lse fp32); f32=False: the fp32 reference rounded to q.dtype,
    the same-precision yardstick of the FA3 rule (for fp32 inputs it is the fp32 reference itself)."""
    if not f32:
        return reference.attention_ref(q, k, v, tensor_layout=layout, is_causal=causal, return_lse=True,
                                       k_scale=ks, v_scale=vs)
    nhd = (lambda t: t) if layout == "NHD" else (lambda t: t.transpose(1, 2))
    qd = nhd(q).double()
    kd = nhd(k).double() * (nhd(ks).double() if ks is not None else 1.0)
    vd = nhd(v).double() * (nhd(vs).double() if vs is not None else 1.0)
    rep = qd.shape[2] // kd.shape[2]
    kd, vd = kd.repeat_interleave(rep, dim=2), vd.repeat_interleave(rep, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", qd, kd) * qd.shape[-1] ** -0.5
    if causal:
        Nq, Nk = s.shape[-2:]
        s = s.masked_fill(torch.ones(Nq, Nk, dtype=torch.bool, device=s.device).tril(Nk - Nq).logical_not(),
                          float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.nan_to_num(torch.exp(s - lse[..., None]), nan=0.0)
    o = torch.einsum("bhqk,bkhd->bqhd", p, vd)
    return nhd(o), lse.float()


def _check_lse(lse, ref_lse):
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), "rows without keys must have lse -inf"
    fin = torch.isfinite(ref_lse)
    # logits are computed in fp32 from exact products; only the summation order differs (measured <= 1e-6)
    torch.testing.assert_close(lse[fin], ref_lse[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout,causal", [("NHD", False), ("NHD", True), ("HND", True)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_attention_fwd(backend, dtype, layout, shape, causal):
    dev = backend_device(backend)
    require_backend("attention", backend, dev)
    q, k, v = _qkv(*shape, dtype, layout, dev)
    out, lse = lk.attention(q, k, v, tensor_layout=layout, is_causal=causal, return_lse=True, backend=backend)
    ref32, ref_lse = _ref(q, k, v, layout, causal)
    lowp, _ = _ref(q, k, v, layout, causal, f32=False)
    assert out.dtype == dtype and out.shape == q.shape and lse.shape == (shape[0], shape[1], shape[3])
    assert_close_to_ref(out, ref32, lowp)
    _check_lse(lse, ref_lse)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout,causal", [("NHD", False), ("HND", True)])
@pytest.mark.parametrize("shape", [(1, 4, 2, 113, 239, 128), (1, 2, 2, 239, 1170, 64)],
                         ids=lambda s: "x".join(map(str, s)))
def test_attention_fp8_kv(backend, dtype, layout, causal, shape):
    dev = backend_device(backend)
    require_backend("attention", backend, dev)
    q, k, v = _qkv(*shape, dtype, layout, dev)
    kn, vn = (k, v) if layout == "NHD" else (k.transpose(1, 2), v.transpose(1, 2))
    kq, ks = lk.quantize_fp8(kn.contiguous(), granularity="token_head")  # [B, Nk, Hkv, 1] scales
    vq, vs = lk.quantize_fp8(vn.contiguous(), granularity="token_head")
    if layout == "HND":
        kq, ks, vq, vs = (t.transpose(1, 2) for t in (kq, ks, vq, vs))
    out, lse = lk.attention(q, kq, vq, tensor_layout=layout, is_causal=causal, return_lse=True, k_scale=ks,
                            v_scale=vs, backend=backend)
    # FA3 rule for fp8 inputs: the same-precision reference runs on the fp8-roundtripped K/V
    ref32, ref_lse = _ref(q, kq, vq, layout, causal, ks, vs)
    lowp, _ = _ref(q, kq, vq, layout, causal, ks, vs, f32=False)
    assert_close_to_ref(out, ref32, lowp)
    _check_lse(lse, ref_lse)
    # and against the unquantised fp32 attention, with the FP8 gates
    full32 = reference.attention_ref(q.float(), k.float(), v.float(), tensor_layout=layout, is_causal=causal)
    assert_fp8_close(out, full32)


@pytest.mark.parametrize("which", ["k", "v"])
def test_attention_fp8_only_k_or_v(which):
    require_backend("attention", "cpu")
    q, k, v = _qkv(1, 4, 2, 37, 300, 64, torch.bfloat16, "NHD", "cpu")
    kw = {}
    if which == "k":
        k, kw["k_scale"] = lk.quantize_fp8(k, granularity="token_head")
    else:
        v, kw["v_scale"] = lk.quantize_fp8(v, granularity="token_head")
    out = lk.attention(q, k, v, tensor_layout="NHD", backend="cpu", **kw)
    ref32 = reference.attention_ref(q.float(), k, v, tensor_layout="NHD", **kw)
    assert_close_to_ref(out, ref32, reference.attention_ref(q, k, v, tensor_layout="NHD", **kw))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_attention_strided_inputs(backend):
    dev = backend_device(backend)
    require_backend("attention", backend, dev)
    q, k, v = _qkv(2, 4, 2, 113, 239, 64, torch.bfloat16, "NHD", dev)
    qs, ks_, vs_ = strided(q, dim=2, pad=3), strided(k, dim=1, pad=5), strided(v, dim=3, pad=4)
    assert not (qs.is_contiguous() or ks_.is_contiguous() or vs_.is_contiguous())
    out = lk.attention(qs, ks_, vs_, tensor_layout="NHD", is_causal=True, backend=backend)
    ref32 = reference.attention_ref(q.float(), k.float(), v.float(), tensor_layout="NHD", is_causal=True)
    assert_close_to_ref(out, ref32, reference.attention_ref(q, k, v, tensor_layout="NHD", is_causal=True))
    # a K cache slice [:end] of a longer buffer, fp8 with its scales (the model's cache view)
    kq, kscale = lk.quantize_fp8(torch.randn(2, 400, 2, 64, device=dev), granularity="token_head")
    vq, vscale = lk.quantize_fp8(torch.randn(2, 400, 2, 64, device=dev), granularity="token_head")
    out = lk.attention(qs, kq[:, :239], vq[:, :239], tensor_layout="NHD", k_scale=kscale[:, :239],
                       v_scale=vscale[:, :239], backend=backend)
    ref32 = reference.attention_ref(q.float(), kq[:, :239], vq[:, :239], tensor_layout="NHD",
                                    k_scale=kscale[:, :239], v_scale=vscale[:, :239])
    lowp = reference.attention_ref(q, kq[:, :239], vq[:, :239], tensor_layout="NHD", k_scale=kscale[:, :239],
                                   v_scale=vscale[:, :239])
    assert_close_to_ref(out, ref32, lowp)


def test_attention_op_writes_nan_prefilled_outputs():
    require_backend("attention", "cpu")
    q, k, v = _qkv(1, 2, 1, 65, 130, 128, torch.bfloat16, "NHD", "cpu")
    out = torch.full_like(q, float("nan"))
    lse = torch.full((1, 2, 65), float("nan"))
    torch.ops.liveact.attention_fwd(q, k, v, None, None, True, 128 ** -0.5, out, lse)
    ref32, ref_lse = _ref(q, k, v, "NHD", True)
    assert_close_to_ref(out, ref32, _ref(q, k, v, "NHD", True, f32=False)[0])
    _check_lse(lse, ref_lse)
    # a strided (non-contiguous) out is written through its strides
    buf = torch.full((1, 65, 4, 128), float("nan"), dtype=torch.bfloat16)
    out2 = buf[:, :, 1:3]
    torch.ops.liveact.attention_fwd(q, k, v, None, None, True, 128 ** -0.5, out2, None)
    assert torch.equal(out2, out) and buf[:, :, 0].isnan().all() and buf[:, :, 3].isnan().all()


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_attention_empty(backend):
    require_backend("attention", backend)
    q = torch.randn(1, 2, 5, 64)
    k = torch.randn(1, 2, 0, 64)
    out, lse = lk.attention(q, k, k, return_lse=True, backend=backend)
    assert torch.equal(out, torch.zeros_like(q)) and torch.isneginf(lse).all()  # as the reference
    q0 = torch.randn(1, 2, 0, 64)
    out, lse = lk.attention(q0, q, q, return_lse=True, backend=backend)
    assert out.shape == q0.shape and lse.shape == (1, 2, 0)


def test_sageattn_drop_in():
    require_backend("attention", "cpu")
    sig = inspect.signature(lk.sageattn)
    want = [("q", inspect.Parameter.empty), ("k", inspect.Parameter.empty), ("v", inspect.Parameter.empty),
            ("tensor_layout", "HND"), ("is_causal", False), ("sm_scale", None), ("return_lse", False)]
    assert [(n, p.default) for n, p in sig.parameters.items()][:7] == want
    assert list(sig.parameters.values())[7].kind == inspect.Parameter.VAR_KEYWORD
    # SDPA-style [B, H, L, E] call with Sage's tuning kwargs ignored
    q, k, v = _qkv(1, 4, 4, 50, 80, 64, torch.bfloat16, "HND", "cpu")
    got = lk.sageattn(q, k, v, is_causal=True, smooth_k=True, pv_accum_dtype="fp32+fp32")
    sdpa = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=False,
                                          attn_mask=torch.ones(50, 80).tril(80 - 50).bool())
    assert_close_to_ref(got, sdpa, reference.attention_ref(q, k, v, is_causal=True))
    o, lse = lk.sageattn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), "NHD", True, 0.1, True)
    o2, lse2 = lk.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), tensor_layout="NHD",
                            is_causal=True, sm_scale=0.1, return_lse=True)
    assert torch.equal(o, o2) and torch.equal(lse, lse2)


def test_attention_opcheck():
    require_backend("attention", "cpu")
    q, k, v = _qkv(1, 4, 2, 9, 20, 64, torch.bfloat16, "NHD", "cpu")
    op = torch.ops.liveact.attention_fwd.default
    torch.library.opcheck(op, (q, k, v, None, None, True, 0.125, torch.empty_like(q), torch.empty(1, 4, 9)))
    kq, ks = reference.quantize_fp8_ref(k.float(), granularity="token_head")
    vq, vs = reference.quantize_fp8_ref(v.float(), granularity="token_head")
    # test_schema is left out for fp8 inputs: its schema-check mode compares tensors with a multiply that torch
    # 2.14 does not implement for float8_e4m3fn ("mul_cpu_reduced_float" not implemented), not an op problem
    torch.library.opcheck(op, (q, kq, vq, ks, vs, False, 0.125, torch.empty_like(q), None),
                          test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_attention_compiles_without_graph_break():
    require_backend("attention", "cpu")
    q, k, v = _qkv(1, 4, 2, 33, 70, 64, torch.float32, "HND", "cpu")
    kq, ks = reference.quantize_fp8_ref(k, granularity="token_head")
    f = torch.compile(lambda q, k, v, s: lk.attention(q, k, v, is_causal=True, k_scale=s) * 2, fullgraph=True,
                      backend="inductor")
    ref = reference.attention_ref(q, kq, v, is_causal=True, k_scale=ks) * 2
    torch.testing.assert_close(f(q, kq, v, ks), ref, rtol=1e-5, atol=1e-5)


def test_attention_bad_input():
    q = torch.randn(1, 4, 8, 64)
    with pytest.raises(ValueError, match=r"attention: q heads \(4\) must be a multiple of k/v heads \(3\)"):
        lk.attention(q, torch.randn(1, 3, 8, 64), torch.randn(1, 3, 8, 64))
    with pytest.raises(TypeError, match="attention: k must have q's dtype float32"):
        lk.attention(q, torch.randn(1, 4, 8, 64).bfloat16(), torch.randn(1, 4, 8, 64))
    with pytest.raises(ValueError, match=r"attention: tensor_layout must be one of \('HND', 'NHD'\), got 'BHSD'"):
        lk.attention(q, q, q, tensor_layout="BHSD")
    kq = torch.randn(1, 4, 8, 64).to(FP8)
    with pytest.raises(TypeError, match="attention: k_scale must be a tensor, got None"):
        lk.attention(q, kq, q)
    with pytest.raises(ValueError, match=r"attention: k_scale must have shape \(1, 4, 8, 1\), got \(1, 4, 8\)"):
        lk.attention(q, kq, q, k_scale=torch.ones(1, 4, 8))
    with pytest.raises(ValueError, match="attention: v_scale is only for float8_e4m3fn v, but v is float32"):
        lk.attention(q, q, q, v_scale=torch.ones(1, 4, 8, 1))
    with pytest.raises(ValueError, match=r"attention: q must be 4-D, got shape \(4, 8, 64\)"):
        lk.attention(q[0], q, q)


def test_attention_grad_through_reference():
    require_backend("attention", "cpu")
    q, k, v = (t.requires_grad_() for t in _qkv(1, 4, 2, 17, 40, 64, torch.float32, "NHD", "cpu"))
    lk.attention(q, k, v, tensor_layout="NHD", is_causal=True, backend="cpu").square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    reference.attention_ref(q, k, v, tensor_layout="NHD", is_causal=True).square().sum().backward()
    for g, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(g, t.grad, rtol=1e-5, atol=1e-5)
