"""Every Triton kernel against the reference, through the public ops (backend="triton") and cache_attention:
under TRITON_INTERPRET=1 on CPU tensors, or on CUDA tensors where a GPU exists. Shapes are small but cover
tails (sizes that are not multiples of the tiles) and several tiles per dimension."""
import os

import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference as R
from liveact_kernels.testing import assert_close_to_ref, assert_fp8_close, fp8_metrics, nan_like, strided

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
HAS_GPU = torch.cuda.is_available()
pytestmark = [pytest.mark.triton,
              pytest.mark.skipif(not (INTERPRET or HAS_GPU),
                                 reason="Triton kernels need a CUDA device or TRITON_INTERPRET=1 (CPU interpreter)")]
DEV = "cuda" if HAS_GPU and not INTERPRET else "cpu"
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# fp32 outputs have no lower-precision yardstick in the rule; attention kernels sum in another order than the
# reference (online softmax, exp2): measured max abs error 4.8e-7 at |out| < 1 (200 x 333 keys), so 2e-6.
ATOL_FP32_ATTN = 2e-6


def rnd(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape) * scale).to(device=DEV, dtype=dtype)


def _close(out, fn, *args, atol=None, **kw):
    """Checks out against fn on fp32 copies of the inputs (ref32) with fn on the inputs as given (ref_lowp)."""
    f32 = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    assert_close_to_ref(out, fn(*f32, **kw), fn(*args, **kw), atol=atol)


# ------------------------------------------------------------------------------------------------ adaLN
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [113, 1024])
def test_adaln_family(dtype, D):
    B, F, fl = 2, 3, 5
    x, y = rnd(B, F * fl, D, dtype=dtype), rnd(B, F * fl, D, dtype=dtype)
    gate, shift, scale = rnd(B, F, D), rnd(B, D), rnd(B, 1, D)
    w, b = rnd(D), rnd(D)
    _close(lk.adaln_modulate(x, shift, scale, weight=w, bias=b, backend="triton"),
           lambda x, sh, sc, w, b: R.adaln_modulate_ref(x, sh, sc, weight=w, bias=b), x, shift, scale, w, b)
    _close(lk.adaln_modulate(x, gate, scale, norm="rms", backend="triton"),
           lambda x, sh, sc: R.adaln_modulate_ref(x, sh, sc, norm="rms"), x, gate, scale)
    _close(lk.gated_residual(x, y, gate, out=nan_like(x), backend="triton"), R.gated_residual_ref, x, y, gate)
    xs = strided(x, dim=-1)        # padded row stride, no copy
    xn, o = lk.adaln_residual(xs, y, gate, shift, scale, backend="triton")
    xr, orr = R.adaln_residual_ref(xs, y, gate, shift, scale)
    assert torch.equal(xn, xr)     # x + y * gate in fp32, one rounding: bit-identical
    assert_close_to_ref(o, R.adaln_modulate_ref(xr.float(), shift, scale), orr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 113), (3, 5, 1024)])
def test_rms_norm(dtype, shape):
    x, w = rnd(*shape, dtype=dtype), rnd(shape[-1], dtype=dtype)
    _close(lk.rms_norm(x, w, out=nan_like(x), backend="triton"), lambda x, w: R.rms_norm_ref(x, w), x, w)
    xs = strided(x, dim=-1)
    _close(lk.rms_norm(xs, backend="triton"), lambda x: R.rms_norm_ref(x), xs)


# ------------------------------------------------------------------------------------------ rope, convkv
@pytest.mark.parametrize("dtype", DTYPES)
def test_rope3d(dtype):
    grid, pos = (3, 4, 5), [2, 5, 9]
    x = rnd(2, 60, 10, 24, dtype=dtype)           # 10 heads: a full and a partial block of 8
    f = lambda x: R.rope3d_ref(x, grid=grid, frame_positions=pos)  # noqa: E731
    _close(lk.rope3d(x, grid=grid, frame_positions=pos, out=nan_like(x), backend="triton"), f, x)
    xs = x.transpose(1, 2).contiguous().transpose(1, 2)    # HND storage seen as NHD
    _close(lk.rope3d(xs, grid=grid, frame_positions=pos, backend="triton"), f, xs)
    # Wan's split at head_dim 128 (44, 42, 42)
    x = rnd(1, 2 * 2 * 3, 2, 128, dtype=dtype)
    _close(lk.rope3d(x, grid=(2, 2, 3), frame_positions=[6, 13], backend="triton"),
           lambda x: R.rope3d_ref(x, grid=(2, 2, 3), frame_positions=[6, 13]), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["token", "frame"])
def test_convkv_compress(dtype, mode):
    H, Dh, fl = 3, 400, 7                            # H*Dh = 1200: two channel blocks of 1024, the 2nd partial
    x = rnd(2, 5 * 14, H, Dh, dtype=dtype)
    w = rnd(H * Dh, 1, 5)
    f = lambda x, w: R.convkv_compress_ref(x, w, mode=mode, frame_len=fl)  # noqa: E731
    _close(lk.convkv_compress(x, w, mode=mode, frame_len=fl, backend="triton"), f, x, w)
    xs = strided(x, dim=2)
    _close(lk.convkv_compress(xs, w, mode=mode, frame_len=fl, backend="triton"), f, xs, w)


# ------------------------------------------------------------------------------------------ dwconv
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("W,stride,act,init", [(4, 1, "silu", True), (5, 5, None, False), (3, 2, "silu", True),
                                                (1, 1, None, False)])
def test_causal_dwconv1d(dtype, W, stride, act, init):
    B, C, L = 2, 37, 300 if stride == 1 else 260      # 37 channels: 3 blocks of 16; L: 3 tiles of 128 + tail
    x, w, b = rnd(B, C, L, dtype=dtype), rnd(C, W), rnd(C)
    ini = rnd(B, C, W - 1, dtype=dtype) if init else None
    got = lk.causal_dwconv1d(x, w, b, stride=stride, activation=act, initial_states=ini, return_final_states=True,
                             backend="triton")
    ref32 = R.causal_dwconv1d_ref(x.float(), w, b, stride=stride, activation=act,
                                  initial_states=None if ini is None else ini.float(), return_final_states=True)
    lowp = R.causal_dwconv1d_ref(x, w, b, stride=stride, activation=act, initial_states=ini, return_final_states=True)
    assert_close_to_ref(got[0], ref32[0], lowp[0])
    assert torch.equal(got[1], lowp[1])              # the final states are copies of inputs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S", [1, 3])
def test_causal_dwconv1d_update(dtype, S):
    B, C, W, St = 2, 70, 4, 5
    x, w, b = rnd(B, C, S, dtype=dtype), rnd(C, W), rnd(C)
    st = rnd(B, C, St, dtype=dtype)
    st_ref = st.clone()
    got = lk.causal_dwconv1d_update(x, st, w, b, "silu", backend="triton")
    want = R.causal_dwconv1d_update_ref(x, st_ref, w, b, "silu")
    assert torch.equal(st, st_ref)
    # one step of W products in fp32 then one rounding: compare with the same-dtype reference via the rule
    assert_close_to_ref(got, want.float(), want, k=1.0, atol=1e-6 if dtype == torch.float32 else None)


# --------------------------------------------------------------------------------------------------- FP8
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gran", ["tensor", "token", "token_head", "block"])
def test_fp8_quantize_dequantize_bit_exact(dtype, gran):
    x = rnd(3, 10, 6, 128, dtype=dtype, scale=5.0)
    x[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    q, s = lk.quantize_fp8(x, granularity=gran, backend="triton")
    qr, sr = R.quantize_fp8_ref(x, granularity=gran)
    assert torch.equal(s, sr)
    assert torch.equal(q.view(torch.uint8), qr.view(torch.uint8))   # same bits, NaN included
    d = lk.dequantize_fp8(q, s, dtype=dtype, backend="triton")
    dr = R.dequantize_fp8_ref(qr, sr, dtype)
    assert torch.equal(torch.isnan(d), torch.isnan(dr)) and torch.equal(d.nan_to_num(), dr.nan_to_num())


def test_fp8_quantize_large_group_two_pass():
    x = rnd(3, 5000, 3, scale=3.0)                   # 45000 elements > 8192: amax pass + quantise pass
    q, s = lk.quantize_fp8(x, granularity="tensor", backend="triton")
    qr, sr = R.quantize_fp8_ref(x)
    assert torch.equal(s, sr) and torch.equal(q.view(torch.uint8), qr.view(torch.uint8))


@pytest.mark.parametrize("with_bias", [True, False])
def test_fp8_linear(with_bias):
    x = rnd(3, 50, 300, dtype=torch.bfloat16)        # M 150 (2 tiles), K 300 (3 K-steps, tail), N 200 (2 tiles)
    wq, ws = R.quantize_fp8_ref(rnd(200, 300), granularity="token")
    b = rnd(200) if with_bias else None
    got = lk.fp8_linear(x, wq, ws.reshape(-1), b, backend="triton")
    want = R.fp8_linear_ref(x, wq, ws, b)
    # the same quantised operands: only the fp32 summation order and the final bf16 rounding differ
    assert_close_to_ref(got, R.fp8_linear_ref(x, wq, ws, b, out_dtype=torch.float32), want)


# ---------------------------------------------------------------------------------------------- attention
def _quant_kv(k, v):
    kq, ks = R.quantize_fp8_ref(k, granularity="token_head")
    vq, vs = R.quantize_fp8_ref(v, granularity="token_head")
    return kq, ks, vq, vs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("causal,Nq,Nk", [(False, 130, 150), (True, 130, 150), (True, 150, 70)])
def test_attention(dtype, layout, causal, Nq, Nk):
    # Nq 130: two query tiles of 128; Nk 150: 3 key blocks of 64; Nq > Nk causal: rows with no key
    B, H, Hk, Dh = 1, 2, 1, 64
    shp = (lambda n, h: (B, h, n, Dh)) if layout == "HND" else (lambda n, h: (B, n, h, Dh))
    q, k, v = rnd(*shp(Nq, H), dtype=dtype), rnd(*shp(Nk, Hk), dtype=dtype), rnd(*shp(Nk, Hk), dtype=dtype)
    o, lse = lk.attention(q, k, v, tensor_layout=layout, is_causal=causal, return_lse=True, backend="triton")
    ref, ref_lse = R.attention_ref(q.float(), k.float(), v.float(), tensor_layout=layout, is_causal=causal,
                                   return_lse=True)
    lowp = R.attention_ref(q, k, v, tensor_layout=layout, is_causal=causal)
    assert_close_to_ref(o, ref, lowp, atol=ATOL_FP32_ATTN if dtype == torch.float32 else None)
    fin = torch.isfinite(ref_lse)
    assert torch.equal(fin, torch.isfinite(lse))
    torch.testing.assert_close(lse[fin], ref_lse[fin], rtol=1e-5, atol=1e-5)


def _emulated_fp8_qk_attention(q, kd, vd, sm_scale=None, **kw):
    """attention_ref with Q quantised per row to e4m3 the way the kernel does (amax/448 per query row):
    the kernel must match this tightly; the gap to the exact reference is the FP8 algorithm's own error."""
    qn = q.float()
    qq, qs = R.quantize_fp8_ref(qn, granularity="token_head")
    return R.attention_ref(qq.float() * qs, kd, vd, sm_scale=sm_scale, **kw)


@pytest.mark.parametrize("pv_fp8", [False, True])
def test_attention_fp8_kv(pv_fp8):
    from liveact_kernels.triton.attention import attention_fwd_triton
    B, H, Hk, Nq, Nk, Dh = 1, 4, 2, 130, 300, 128
    q = rnd(B, Nq, H, Dh, dtype=torch.bfloat16)
    kq, ks, vq, vs = _quant_kv(rnd(B, Nk, Hk, Dh, scale=3.0), rnd(B, Nk, Hk, Dh))
    out = nan_like(q)
    attention_fwd_triton(q, kq, vq, ks, vs, False, Dh ** -0.5, out, None, qk_fp8=True, pv_fp8=pv_fp8)
    kd, vd = kq.float() * ks, vq.float() * vs
    exact = R.attention_ref(q.float(), kd, vd, tensor_layout="NHD")
    emul = _emulated_fp8_qk_attention(q, kd, vd, tensor_layout="NHD")
    # kernel vs the same algorithm in fp32: only P's rounding (bf16, or e4m3 with PV_FP8) and the order of sums
    # differ (measured cos 0.9999996 / rel_l1 0.0021 for bf16 P, 0.99962 / 0.025 for e4m3 P)
    assert_fp8_close(out, emul, {"cos": 0.9995, "rel_l1": 0.04 if pv_fp8 else 0.01})
    # vs the exact reference: the FP8 Q (and P) quantisation error on i.i.d. Gaussian data, where outputs are
    # small averages and relative errors largest (measured cos 0.9988 / rel_l1 0.046 bf16 P, 0.9986 / 0.050 e4m3 P)
    assert_fp8_close(out, exact, {"rel_l1": 0.07})
    # the public op: exact dequantisation (K, V widened in registers). Like FlashAttention, P is rounded to bf16
    # for the tensor-core P.V, on top of the output rounding the yardstick has: with this peaked softmax
    # (K scale 3, outputs up to ~3) the measured max error is 2.25x the yardstick's, hence k = 3.
    o = lk.attention(q, kq, vq, tensor_layout="NHD", k_scale=ks, v_scale=vs, backend="triton")
    assert_close_to_ref(o, exact, R.attention_ref(q, kd, vd, tensor_layout="NHD"))


# ------------------------------------------------------------------------------------- audio attention
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Na", [32, 20])
def test_audio_cross_attention(dtype, Na):
    B, T, fl, H, Dh = 2, 3, 70, 2, 64                  # fl 70: a full and a partial tile of 64 rows
    q = rnd(B, T * fl, H, Dh, dtype=dtype)
    k, v = rnd(B, 5, Na, H, Dh, dtype=dtype), rnd(B, 5, Na, H, Dh, dtype=dtype)
    for zf in (False, True):
        got = lk.audio_cross_attention(q, k, v, frame_len=fl, frame_offset=1, zero_first_frame=zf, backend="triton")
        f = lambda q, k, v: R.audio_cross_attention_ref(q, k, v, frame_len=fl, frame_offset=1,  # noqa: E731
                                                        zero_first_frame=zf)
        _close(got, f, q, k, v, atol=ATOL_FP32_ATTN if dtype == torch.float32 else None)


# ------------------------------------------------------------------------------- FP8 cache attention
def _cache_ref(q, kd, vd, grid_hw, qpos, S, nk=None):
    """rope3d_ref + attention_ref composed: the definition cache_attention fuses."""
    h, w = grid_hw
    Tq = q.shape[1] // (h * w)
    nk = nk if nk is not None else kd.shape[1]
    kr = R.rope3d_ref(kd.float(), grid=(S, h, w), frame_positions=list(range(S)))[:, :nk]
    qr = R.rope3d_ref(q.float(), grid=(Tq, h, w), frame_positions=qpos)
    return qr, kr, vd.float()[:, :nk]


def _rowq(t):
    """Per-row e4m3 quantise-dequantise (the kernel's on-the-fly quantisation of roped Q and K rows)."""
    q, s = R.quantize_fp8_ref(t, granularity="token_head")
    return q.float() * s


@pytest.mark.parametrize("fp8", [True, False])
def test_cache_attention(fp8):
    from liveact_kernels.triton.cache_attention import cache_attention
    B, H, Hk, Dh, (h, w), S, Tq = 1, 2, 1, 128, (4, 6), 14, 8     # 14 slots of fl 24 = 336 keys, 192 queries
    fl = h * w
    qpos = list(range(6, 14))
    q = rnd(B, Tq * fl, H, Dh, dtype=torch.bfloat16)
    kf, vf = rnd(B, S * fl, Hk, Dh, scale=2.0), rnd(B, S * fl, Hk, Dh)
    if fp8:
        kc, ks, vc, vs = _quant_kv(kf, vf)
        kd, vd = kc.float() * ks, vc.float() * vs
    else:
        kc, vc, ks, vs = kf.bfloat16(), vf.bfloat16(), None, None
        kd, vd = kc.float(), vc.float()
    # smooth_k=False: the emulation below quantises the roped keys as they are
    out, lse = cache_attention(q, kc, vc, k_scale=ks, v_scale=vs, grid_hw=(h, w), q_frame_positions=qpos,
                               return_lse=True, smooth_k=False)
    qr, kr, vr = _cache_ref(q, kd, vd, (h, w), qpos, S)
    exact, exact_lse = R.attention_ref(qr, kr, vr, tensor_layout="NHD", return_lse=True)
    if fp8:
        emul = R.attention_ref(_rowq(qr), _rowq(kr), vr, tensor_layout="NHD")
        # kernel vs the same algorithm in fp32 (roped rows quantised per row): measured cos 0.9999993, rel_l1 0.0021
        assert_fp8_close(out, emul, {"cos": 0.9999, "rel_l1": 0.01})
        # vs exact: e4m3 Q and K after RoPE on i.i.d. data (measured cos 0.9982, rel_l1 0.058)
        assert_fp8_close(out, exact, {"rel_l1": 0.08})
    else:
        # the reference rounds roped q and k to bf16 before the bf16 attention; the kernel keeps them in fp32
        # until the dot operands; the rule with k=2 (measured max error 1.07x that of the bf16 composition)
        lowp = R.attention_ref(qr.bfloat16(), kr.bfloat16(), vr.bfloat16(), tensor_layout="NHD")
        assert_close_to_ref(out, exact, lowp)
    torch.testing.assert_close(lse, exact_lse, rtol=2e-2 if fp8 else 2e-3, atol=2e-2 if fp8 else 2e-3)


def test_cache_attention_block0_and_positions():
    """Block 0 attends to its 6 slots only (num_kv_tokens); custom slot positions (SP layout) move the keys."""
    from liveact_kernels.triton.cache_attention import cache_attention
    B, H, Dh, (h, w), S = 1, 2, 64, (3, 5), 14
    fl = h * w
    q = rnd(B, 6 * fl, H, Dh, dtype=torch.bfloat16)
    kc, vc = rnd(B, S * fl, H, Dh, dtype=torch.bfloat16), rnd(B, S * fl, H, Dh, dtype=torch.bfloat16)
    kc[:, 6 * fl:] = float("nan")                    # slots beyond num_kv_tokens must never be read into results
    out = cache_attention(q, kc, vc, grid_hw=(h, w), q_frame_positions=range(6), num_kv_tokens=6 * fl)
    qr, kr, vr = _cache_ref(q, kc[:, :6 * fl], vc[:, :6 * fl], (h, w), list(range(6)), 6)
    assert_fp8_close(out, R.attention_ref(qr, kr, vr, tensor_layout="NHD"), {"cos": 0.9999, "rel_l1": 0.01})
    kpos = [0, 1, 2, 3, 4, 5, 7, 9, 11, 13, 6, 8, 10, 12]
    out2 = cache_attention(q, kc[:, :6 * fl].contiguous(), vc[:, :6 * fl].contiguous(), grid_hw=(h, w),
                           q_frame_positions=range(6), kv_frame_positions=kpos[:6][::-1])
    kr2 = R.rope3d_ref(kc[:, :6 * fl].float(), grid=(6, h, w), frame_positions=kpos[:6][::-1])
    assert_fp8_close(out2, R.attention_ref(qr, kr2, vr, tensor_layout="NHD"), {"cos": 0.9999, "rel_l1": 0.01})
    assert fp8_metrics(out2, out)["rel_l1"] > 0.01   # the positions matter


def test_cache_attention_bad_input():
    from liveact_kernels.triton.cache_attention import cache_attention
    q = torch.zeros(1, 24, 2, 64, dtype=torch.bfloat16)
    k = torch.zeros(1, 48, 2, 64, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"cache_attention: k_cache is float8_e4m3fn, so its scale must be fp32"):
        cache_attention(q, k, k, grid_hw=(4, 6), q_frame_positions=[6])
    with pytest.raises(ValueError, match=r"cache_attention: q tokens \(24\) and cache tokens \(48\) must be multiples"):
        cache_attention(q, k.bfloat16(), k.bfloat16(), grid_hw=(5, 5), q_frame_positions=[6])
    with pytest.raises(ValueError, match=r"cache_attention: q_frame_positions must have 1 entries, got 2"):
        cache_attention(q, k.bfloat16(), k.bfloat16(), grid_hw=(4, 6), q_frame_positions=[6, 7])


# -------------------------------------------------------------------------------- ConvKV cache update
def _cache_update_composed(ck, cv, ks, vs, nk, nv, w, fl, mode, block):
    """reference-model.md section 4.2 written out with the reference ops (slots before the call feed Phi)."""
    outs = []
    for c, s, n in ((ck, ks, nk), (cv, vs, nv)):
        fp8 = c.dtype == torch.float8_e4m3fn
        old = c.float() * s if fp8 else c.float()
        slots = [old[:, i * fl:(i + 1) * fl] for i in range(14)]
        if block == 0:
            slots[:6] = list(n.float().split(fl, dim=1))
        else:
            if block >= 2:
                slots[2] = R.convkv_compress_ref(torch.cat(slots[2:7], 1), w, mode=mode, frame_len=fl).float()
                slots[3] = R.convkv_compress_ref(torch.cat(slots[7:12], 1), w, mode=mode, frame_len=fl).float()
                slots[4], slots[5] = slots[12], slots[13]
            slots[6:] = list(n.float().split(fl, dim=1))
        full = torch.cat(slots, 1)
        if fp8:
            q, sc = R.quantize_fp8_ref(full, granularity="token_head")
            if block >= 2:   # the moved raw frames keep their bytes and scales (no re-quantisation)
                q[:, 4 * fl:6 * fl], sc[:, 4 * fl:6 * fl] = c[:, 12 * fl:14 * fl], s[:, 12 * fl:14 * fl]
            if block == 1 or block >= 2:   # untouched slots keep their bytes too
                keep = slice(0, 2 * fl) if block >= 2 else slice(0, 6 * fl)
                q[:, keep], sc[:, keep] = c[:, keep], s[:, keep]
            outs.append((q, sc))
        else:
            outs.append((full.to(c.dtype), None))
    return outs


@pytest.mark.parametrize("fp8", [True, False])
@pytest.mark.parametrize("mode", ["token", "frame"])
@pytest.mark.parametrize("block", [0, 1, 2])
def test_convkv_cache_update(fp8, mode, block):
    from liveact_kernels.triton.convkv import convkv_cache_update
    B, H, Dh, fl = 1, 2, 32, 70                       # fl 70: two full chunks of 32 tokens and a partial one
    kf, vf = rnd(B, 14 * fl, H, Dh), rnd(B, 14 * fl, H, Dh)
    nn = (6 if block == 0 else 8) * fl
    nk, nv = rnd(B, nn, H, Dh, dtype=torch.bfloat16), rnd(B, nn, H, Dh, dtype=torch.bfloat16)
    w = rnd(H * Dh, 1, 5)
    if fp8:
        ck, ks, cv, vs = *R.quantize_fp8_ref(kf, granularity="token_head"), *R.quantize_fp8_ref(vf, granularity="token_head")
    else:
        ck, cv, ks, vs = kf.bfloat16(), vf.bfloat16(), None, None
    want = _cache_update_composed(ck, cv, ks, vs, nk, nv, w, fl, mode, block)
    got = [t.clone() if t is not None else None for t in (ck, cv, ks, vs)]
    convkv_cache_update(got[0], got[1], nk, nv, w, frame_len=fl, k_scale=got[2], v_scale=got[3], mode=mode,
                        block=block)
    for (c, s), (wc, ws) in zip(((got[0], got[2]), (got[1], got[3])), want):
        if fp8:
            # same fp32 sums and the same quantiser: bit-identical bytes and scales (measured: 0 mismatches)
            assert torch.equal(s, ws)
            assert torch.equal(c.view(torch.uint8), wc.view(torch.uint8))
        else:
            assert torch.equal(c, wc)
    if hasattr(R, "convkv_cache_update_ref"):        # the ConvKV engineer's reference, once it is on main
        ref = [t.clone() if t is not None else None for t in (ck, cv, ks, vs)]
        R.convkv_cache_update_ref(ref[0], ref[1], nk, nv, w, frame_len=fl, k_scale=ref[2], v_scale=ref[3],
                                  mode=mode, block=block)
        for a, b in zip(got, ref):
            if a is not None:
                assert torch.equal(a.view(torch.uint8) if fp8 and a.dtype != torch.float32 else a,
                                   b.view(torch.uint8) if fp8 and b.dtype != torch.float32 else b)


def test_every_op_has_a_triton_backend():
    """The dispatcher finds a Triton launcher for every public op (what backend="triton" resolves to)."""
    from liveact_kernels import _backend
    missing = [op for op in lk.OPS if _backend.triton_launcher(op) is None]
    assert not missing, f"ops without a Triton launcher: {missing}"
    assert all("triton" in lk.available_backends(op, DEV) for op in lk.OPS)


def test_cache_attention_k_smoothing():
    """Keys with a per-channel offset (as after a learned RMSNorm weight): subtracting the mean roped key
    before the e4m3 quantisation of K is exact under softmax (LSE corrected) and reduces the FP8 error."""
    from liveact_kernels.triton.cache_attention import cache_attention
    B, H, Dh, (h, w), S, Tq = 1, 2, 128, (4, 6), 14, 8
    fl = h * w
    qpos = list(range(6, 14))
    q = rnd(B, Tq * fl, H, Dh, dtype=torch.bfloat16)
    kf = rnd(B, S * fl, H, Dh) + 6.0 * rnd(1, 1, H, Dh)          # a strong per-channel offset
    kc, ks, vc, vs = _quant_kv(kf, rnd(B, S * fl, H, Dh))
    qr, kr, vr = _cache_ref(q, kc.float() * ks, vc.float() * vs, (h, w), qpos, S)
    exact, exact_lse = R.attention_ref(qr, kr, vr, tensor_layout="NHD", return_lse=True)
    m, lse_err = {}, {}
    for smooth in (False, True):
        out, lse = cache_attention(q, kc, vc, k_scale=ks, v_scale=vs, grid_hw=(h, w), q_frame_positions=qpos,
                                   smooth_k=smooth, return_lse=True)
        m[smooth] = fp8_metrics(out, exact)
        lse_err[smooth] = (lse - exact_lse).abs().max().item()
    # measured: rel_l1 0.098 -> 0.065, cos 0.9949 -> 0.9976, max LSE error 0.74 -> 0.15 (|lse| up to 26)
    assert m[True]["rel_l1"] < 0.8 * m[False]["rel_l1"] and lse_err[True] < 0.5 * lse_err[False], (m, lse_err)
    assert_fp8_close(out, exact, {"rel_l1": 0.08, "cos": 0.995})
    assert lse_err[True] < 0.3
