"""convkv_compress and convkv_cache_update: CPU/CUDA/Triton kernels against the reference (both modes, awkward
sizes, strided, NaN-prefilled), the official nn.Conv1d formulation, the 14-slot cache update slot by slot
(bf16/fp16/fp32 and FP8 caches, blocks 0, 1, >= 2, a multi-block run), opcheck, torch.compile, grads, bad input."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref, assert_fp8_close, nan_like, strided
from conftest import KERNEL_BACKENDS, backend_device, require_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FP8 = torch.float8_e4m3fn


def _ref_pair(x, w, **kw):
    # ref32 from float64 math: for fp32 outputs the same-precision yardstick (the fp32 reference) then
    # measures the summation-order noise the kernel is allowed.
    ref32 = reference.convkv_compress_ref(x.double(), w.double(), **kw).float()
    lowp = reference.convkv_compress_ref(x, w, **kw)
    return ref32, lowp


# (B, N, H, Dh, group, mode, frame_len)
CASES = [(1, 5, 1, 128, 5, "token", None), (2, 35, 3, 64, 5, "token", None), (1, 5 * 113, 2, 16, 5, "token", None),
         (1, 21, 2, 24, 3, "token", None), (2, 7, 1, 8, 1, "token", None), (1, 70, 2, 32, 5, "frame", 7),
         (2, 5 * 1170 // 5, 1, 16, 5, "frame", 234)]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_convkv_compress_fwd(backend, dtype, case):
    dev = backend_device(backend)
    require_backend("convkv_compress", backend, dev)
    B, N, H, Dh, g, mode, fl = case
    x = torch.randn(B, N, H, Dh, device=dev).to(dtype)
    w = torch.randn(H * Dh, 1, g, device=dev)
    out = nan_like(x[:, : N // g])
    got = lk.convkv_compress(x, w, group=g, mode=mode, frame_len=fl, out=out, backend=backend)
    assert got is out
    assert_close_to_ref(got, *_ref_pair(x, w, group=g, mode=mode, frame_len=fl))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))
def test_convkv_token_mode_is_the_official_conv1d(backend):
    """mode='token' is the checkpoint's k_compress: [1, 5*fl, H, Dh] -> [1, H*Dh, 5*fl] -> depthwise Conv1d
    (k = s = 5, no bias) -> back to [1, fl, H, Dh] (fl = 1024 straddles frame boundaries, reference-model 4.2)."""
    dev = backend_device(backend)
    require_backend("convkv_compress", backend, dev)
    fl, H, Dh = 1024, 2, 16
    x = torch.randn(1, 5 * fl, H, Dh, device=dev)
    w = torch.randn(H * Dh, 1, 5, device=dev)
    want = F.conv1d(x.reshape(1, 5 * fl, H * Dh).transpose(1, 2), w, stride=5, groups=H * Dh)
    want = want.transpose(1, 2).reshape(1, fl, H, Dh)
    got = lk.convkv_compress(x, w, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_convkv_compress_strided_and_empty(backend):
    dev = backend_device(backend)
    require_backend("convkv_compress", backend, dev)
    base = torch.randn(2, 15, 3, 32, device=dev).bfloat16()
    w = torch.randn(96, 1, 5, device=dev)
    for x in (strided(base, dim=2), strided(base, dim=1), strided(base, dim=-1)):
        assert not x.is_contiguous()
        assert_close_to_ref(lk.convkv_compress(x, w, backend=backend), *_ref_pair(x, w, group=5))
    e = torch.empty(0, 15, 3, 32, device=dev)
    assert lk.convkv_compress(e, w, backend=backend).shape == (0, 3, 3, 32)


def test_convkv_compress_opcheck():
    require_backend("convkv_compress", "cpu")
    x = torch.randn(2, 10, 3, 8)
    w = torch.randn(24, 5)
    for mode, fl in (("token", 0), ("frame", 2)):
        torch.library.opcheck(torch.ops.liveact.convkv_compress_fwd.default, (x, w, 5, mode, fl, torch.empty(2, 2, 3, 8)))


def test_convkv_compress_compiles_without_graph_break():
    require_backend("convkv_compress", "cpu")
    x, w = torch.randn(1, 20, 2, 16), torch.randn(32, 1, 5)
    f = torch.compile(lambda x, w: lk.convkv_compress(x, w, mode="frame", frame_len=4) + 1, fullgraph=True)
    torch.testing.assert_close(f(x, w), reference.convkv_compress_ref(x, w, mode="frame", frame_len=4) + 1)


def test_convkv_compress_grad_through_reference():
    require_backend("convkv_compress", "cpu")
    x = torch.randn(1, 10, 2, 8, requires_grad=True)
    w = torch.randn(16, 1, 5, requires_grad=True)
    lk.convkv_compress(x, w, backend="cpu").square().sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    reference.convkv_compress_ref(x, w).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


def test_convkv_compress_bad_input():
    x = torch.randn(1, 10, 2, 8)
    with pytest.raises(ValueError, match=r"convkv_compress: weight must have shape \(16, 1, 5\)"):
        lk.convkv_compress(x, torch.randn(16, 1, 3))
    with pytest.raises(ValueError, match="convkv_compress: x has 12 tokens, not a multiple of group=5"):
        lk.convkv_compress(torch.randn(1, 12, 2, 8), torch.randn(16, 1, 5))
    with pytest.raises(ValueError, match="convkv_compress: mode='frame' needs frame_len"):
        lk.convkv_compress(x, torch.randn(16, 1, 5), mode="frame")
    with pytest.raises(ValueError, match="convkv_compress: mode must be one of"):
        lk.convkv_compress(x, torch.randn(16, 1, 5), mode="time")


# ------------------------------------------------------------------------------------------ cache update
S = 14  # 2 sinks + 2 compressed + 2 recent + 8 new


def _make_cache(B, fl, H, Dh, cache_dtype, dev, fill=None):
    x = torch.randn(B, S * fl, H, Dh, device=dev) * 3
    if cache_dtype == FP8:
        q, s = reference.quantize_fp8_ref(x, granularity="token_head")
        if fill is not None:
            q.view(torch.uint8).fill_(0x7F)  # NaN in e4m3fn
            s.fill_(float("nan"))
        return q, s
    c = x.to(cache_dtype)
    if fill is not None:
        c.fill_(fill)
    return c, None


def _deq(c, s):
    return reference.dequantize_fp8_ref(c, s, torch.float32) if c.dtype == FP8 else c.float()


def _state(B, fl, H, Dh, cache_dtype, new_dtype, dev, fill=None):
    ck, ks = _make_cache(B, fl, H, Dh, cache_dtype, dev, fill)
    cv, vs = _make_cache(B, fl, H, Dh, cache_dtype, dev, fill)
    return [ck, cv, ks, vs]


def _clone(st):
    return [t.clone() if t is not None else None for t in st]


def _update(st, new_k, new_v, wk, wv, fl, backend, **kw):
    ck, cv, ks, vs = st
    r = lk.convkv_cache_update(ck, cv, new_k, new_v, wk, wv, frame_len=fl, k_scale=ks, v_scale=vs,
                               backend=backend, **kw)
    assert r[0] is ck and r[1] is cv


def _check_slots(got, want, before, fl, block, mode, wk, wv):
    """Slot by slot: sinks untouched, moved and newly written slots exact (bytes and scales), compressed
    slots by the accuracy rule (float caches) or the FP8 gates plus matching scales."""
    for i, w_ in ((0, wk), (1, wv)):
        c, s, c_ref, s_ref = got[i], got[2 + i], want[i], want[2 + i]
        fp8 = c.dtype == FP8
        exact_slots = list(range(0, 2)) + (list(range(4, 14)) if block >= 1 else list(range(0, 6)))
        if block == 0:
            exact_slots = list(range(0, 14))
        for slot in sorted(set(exact_slots)):
            sl = slice(slot * fl, (slot + 1) * fl)
            a, b = c[:, sl], c_ref[:, sl]
            if fp8:
                assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), f"cache {i} slot {slot} bytes differ"
                assert torch.equal(s[:, sl], s_ref[:, sl]) or (torch.isnan(s[:, sl]).all() and torch.isnan(s_ref[:, sl]).all())
            else:
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=f"cache {i} slot {slot}")
        if block >= 2:
            old = _deq(before[i], before[2 + i])
            for cslot, src in ((2, 2), (3, 7)):
                ref32 = reference.convkv_compress_ref(old[:, src * fl:(src + 5) * fl].double(), w_.double(),
                                                      mode=mode, frame_len=fl).float()
                sl = slice(cslot * fl, (cslot + 1) * fl)
                if fp8:
                    assert_fp8_close(_deq(c, s)[:, sl], ref32)
                    torch.testing.assert_close(s[:, sl], s_ref[:, sl], rtol=1e-5, atol=0)
                else:
                    assert_close_to_ref(c[:, sl], ref32, c_ref[:, sl])


CACHE_DTYPES = [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16), (torch.float32, torch.float32),
                (FP8, torch.bfloat16), (FP8, torch.float32)]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtypes", CACHE_DTYPES, ids=lambda d: f"{str(d[0])[6:]}-{str(d[1])[6:]}")
@pytest.mark.parametrize("mode", ["token", "frame"])
@pytest.mark.parametrize("shape", [(1, 7, 2, 32), (2, 10, 3, 16)], ids=lambda s: "x".join(map(str, s)))
def test_convkv_cache_update_steady_state(backend, dtypes, mode, shape):
    dev = backend_device(backend)
    require_backend("convkv_cache_update", backend, dev)
    B, fl, H, Dh = shape
    cache_dtype, new_dtype = dtypes
    st = _state(B, fl, H, Dh, cache_dtype, new_dtype, dev)
    # the sinks are never read nor written in steady state: NaN there must stay NaN and reach nothing else
    for t in st[:2]:
        (t.view(torch.uint8)[:, : 2 * fl].fill_(0x7F) if cache_dtype == FP8 else t[:, : 2 * fl].fill_(float("nan")))
    before = _clone(st)
    ref_st = _clone(st)
    new_k = torch.randn(B, 8 * fl, H, Dh, device=dev).to(new_dtype)
    new_v = torch.randn(B, 8 * fl, H, Dh, device=dev).to(new_dtype)
    wk, wv = torch.randn(H * Dh, 1, 5, device=dev), torch.randn(H * Dh, 1, 5, device=dev)
    ptrs = [t.data_ptr() for t in st if t is not None]
    _update(st, new_k, new_v, wk, wv, fl, backend, mode=mode, block=2)
    assert [t.data_ptr() for t in st if t is not None] == ptrs  # in place
    reference.convkv_cache_update_ref(*ref_st[:2], new_k, new_v, wk, wv, frame_len=fl, k_scale=ref_st[2],
                                      v_scale=ref_st[3], mode=mode, block=2)
    _check_slots(st, ref_st, before, fl, 2, mode, wk, wv)
    for t in st[:2]:
        assert torch.isnan(_deq(t, st[2] if t is st[0] else st[3])[:, 2 * fl:]).sum() == 0


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8], ids=["bf16", "fp8"])
def test_convkv_cache_update_blocks_0_1_into_nan_cache(backend, cache_dtype):
    """Blocks 0 and 1 are plain writes (no compression) into a NaN-prefilled cache: exactly the slots
    0..5 (block 0), then 6..13 (block 1) change, and equal the reference."""
    dev = backend_device(backend)
    require_backend("convkv_cache_update", backend, dev)
    B, fl, H, Dh = 1, 6, 2, 32
    st = _state(B, fl, H, Dh, cache_dtype, torch.bfloat16, dev, fill=float("nan"))
    ref_st = _clone(st)
    for block, n in ((0, 6), (1, 8)):
        nk = torch.randn(B, n * fl, H, Dh, device=dev).bfloat16()
        nv = torch.randn(B, n * fl, H, Dh, device=dev).bfloat16()
        _update(st, nk, nv, None, None, fl, backend, block=block)
        reference.convkv_cache_update_ref(*ref_st[:2], nk, nv, None, frame_len=fl, k_scale=ref_st[2],
                                          v_scale=ref_st[3], block=block)
        written = 6 * fl if block == 0 else 14 * fl
        d = _deq(st[0], st[2])
        assert not torch.isnan(d[:, :written]).any() and torch.isnan(d[:, written:]).all()
        _check_slots(st, ref_st, None, fl, block, "token", None, None)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8], ids=["bf16", "fp8"])
def test_convkv_cache_update_multi_block_run(backend, cache_dtype):
    """Blocks 0..4 of a video (fl = 9: token groups straddle frames), kernel against reference, same
    inputs; weight_v=None (K's kernel for V, as the official code)."""
    dev = backend_device(backend)
    require_backend("convkv_cache_update", backend, dev)
    B, fl, H, Dh = 1, 9, 2, 16
    st = _state(B, fl, H, Dh, cache_dtype, torch.bfloat16, dev, fill=0.0)
    ref_st = _clone(st)
    wk = torch.rand(H * Dh, 1, 5, device=dev) * 0.4
    for block in range(5):
        n = 6 if block == 0 else 8
        nk = torch.randn(B, n * fl, H, Dh, device=dev).bfloat16()
        nv = torch.randn(B, n * fl, H, Dh, device=dev).bfloat16()
        _update(st, nk, nv, wk, None, fl, backend, block=block)
        reference.convkv_cache_update_ref(*ref_st[:2], nk, nv, wk, frame_len=fl, k_scale=ref_st[2],
                                          v_scale=ref_st[3], block=block)
    for i in range(2):
        got, want = _deq(st[i], st[2 + i]), _deq(ref_st[i], ref_st[2 + i])
        # recursive compression compounds one rounding per block: FP8 gates, or bf16's rule with k = 4
        if cache_dtype == FP8:
            assert_fp8_close(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=2 ** -7, atol=2 ** -7)


def test_convkv_cache_update_opcheck():
    require_backend("convkv_cache_update", "cpu")
    fl, H, Dh = 2, 2, 16
    ck, cv = torch.randn(1, 14 * fl, H, Dh), torch.randn(1, 14 * fl, H, Dh)
    nk, nv = torch.randn(1, 8 * fl, H, Dh), torch.randn(1, 8 * fl, H, Dh)
    w = torch.randn(H * Dh, 5)
    torch.library.opcheck(torch.ops.liveact.convkv_cache_update_fwd.default,
                          (ck, cv, nk, nv, w, w, None, None, fl, 5, "token", 2, 2, 2, 2))
    q, s = reference.quantize_fp8_ref(ck, granularity="token_head")
    q2, s2 = reference.quantize_fp8_ref(cv, granularity="token_head")
    torch.library.opcheck(torch.ops.liveact.convkv_cache_update_fwd.default,
                          (q, q2, nk.bfloat16(), nv.bfloat16(), w, w, s, s2, fl, 5, "frame", 2, 2, 2, 2),
                          test_utils=("test_faketensor",))  # test_schema compares with ops fp8 lacks on CPU


def test_convkv_cache_update_compiles_without_graph_break():
    require_backend("convkv_cache_update", "cpu")
    fl, H, Dh = 3, 2, 16
    ck, cv = torch.randn(1, 14 * fl, H, Dh), torch.randn(1, 14 * fl, H, Dh)
    nk, nv = torch.randn(1, 8 * fl, H, Dh), torch.randn(1, 8 * fl, H, Dh)
    w = torch.randn(H * Dh, 1, 5)
    rk, rv = ck.clone(), cv.clone()

    def step(ck, cv, nk, nv, w):
        lk.convkv_cache_update(ck, cv, nk, nv, w, frame_len=fl)
        return ck.sum() + cv.sum()

    f = torch.compile(step, fullgraph=True)
    f(ck, cv, nk, nv, w)
    reference.convkv_cache_update_ref(rk, rv, nk, nv, w, frame_len=fl)
    torch.testing.assert_close(ck, rk, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cv, rv, rtol=1e-5, atol=1e-5)


def test_convkv_cache_update_bad_input():
    fl, H, Dh = 2, 2, 16
    ck, cv = torch.randn(1, 14 * fl, H, Dh), torch.randn(1, 14 * fl, H, Dh)
    nk = torch.randn(1, 8 * fl, H, Dh)
    w = torch.randn(H * Dh, 1, 5)
    with pytest.raises(ValueError, match=r"convkv_cache_update: new_k must have shape \(1, 16, 2, 16\), got \(1, 14, 2, 16\)"):
        lk.convkv_cache_update(ck, cv, nk[:, :14], nk[:, :14], w, frame_len=fl)
    with pytest.raises(ValueError, match="convkv_cache_update: cache_k must hold 14 slots of frame_len=3"):
        lk.convkv_cache_update(ck, cv, nk, nk, w, frame_len=3)
    with pytest.raises(ValueError, match="convkv_cache_update: needs compressed \\+ recent <= group"):
        lk.convkv_cache_update(ck, cv, nk, nk, w, frame_len=fl, recent=4)
    with pytest.raises(ValueError, match="convkv_cache_update: cache_k must be contiguous"):
        big = torch.randn(1, 14 * fl, H, 2 * Dh)
        lk.convkv_cache_update(big[..., :Dh], big[..., Dh:], nk, nk, w, frame_len=fl)
    q = ck.to(FP8)
    with pytest.raises(TypeError, match="convkv_cache_update: k_scale must be a tensor, got None"):
        lk.convkv_cache_update(q, q.clone(), nk, nk, w, frame_len=fl)
    with pytest.raises(TypeError, match="convkv_cache_update: new_k must have dtype float32, got bfloat16"):
        lk.convkv_cache_update(ck, cv, nk.bfloat16(), nk.bfloat16(), w, frame_len=fl)
    with pytest.raises(ValueError, match=r"convkv_cache_update: weight_k must have shape \(32, 1, 5\)"):
        lk.convkv_cache_update(ck, cv, nk, nk, torch.randn(32, 1, 3), frame_len=fl)
