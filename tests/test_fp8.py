"""quantize_fp8 / dequantize_fp8: the shared e4m3 conversion bit-exact against torch, every granularity and
dtype against the reference (bit-exact q and scale), NaN/Inf behaviour, round-trip bound, opcheck,
torch.compile, bad input."""
import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference
from conftest import KERNEL_BACKENDS, backend_device, require_backend

E4M3 = torch.float8_e4m3fn
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (shape, granularity, block): awkward sizes 1, 7, 113, 1170 and the KV-cache layout (batch, tokens, heads, 128)
CASES = [((1,), "tensor", 128), ((7, 113), "tensor", 128), ((3, 70000), "tensor", 128),  # > 65536: split group
         ((1, 1), "token", 128), ((7, 113), "token", 128), ((2, 5, 3, 128), "token", 128),
         ((2, 1170), "token_head", 128), ((1, 7, 40, 128), "token_head", 128), ((113, 1), "token_head", 128),
         ((3, 256), "block", 128), ((2, 7, 1170), "block", 117), ((5, 64), "block", 1)]


def _bits(q):
    return q.view(torch.uint8)


def _assert_same_fp8(got, want):
    """Bit-identical codes; NaN codes (0x7f/0xff) only need to sit at the same places."""
    g, w = _bits(got).int(), _bits(want).int()
    nan_g, nan_w = (g & 0x7f) == 0x7f, (w & 0x7f) == 0x7f
    assert torch.equal(nan_g, nan_w), "NaN placement differs"
    bad = (g != w) & ~nan_w
    assert not bad.any(), f"{int(bad.sum())} codes differ, first (got, want): " \
                          f"{list(zip(g[bad][:5].tolist(), w[bad][:5].tolist()))}"


def _convert(values, backend):
    """Kernel conversion of fp32 values (|v| <= 448): rows [448, v...] quantised per row get scale exactly
    1 (448 / 448), so q = the conversion of v itself."""
    dev = backend_device(backend)
    n, R = values.numel(), 255
    v = torch.cat([values, values.new_zeros((-n) % R)]).reshape(-1, R)
    x = torch.cat([torch.full((v.shape[0], 1), 448.0), v], 1).to(dev)
    q, s = lk.quantize_fp8(x, granularity="token_head", backend=backend)
    assert bool((s == 1).all())
    return q[:, 1:].reshape(-1)[:n].cpu()


def _special_values():
    """Every bf16 and fp16 bit pattern, every e4m3 value, the midpoints between neighbours and one fp32 ulp
    either side (the ties), the subnormal/normal boundary and the saturation edge, random fp32."""
    pat = torch.arange(65536, dtype=torch.int32).to(torch.int16)
    grid = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(E4M3).float()
    grid = grid[torch.isfinite(grid)].unique()
    mid = (grid[1:] + grid[:-1]) / 2                       # exact in fp32
    near = torch.cat([mid, torch.nextafter(mid, mid + 1), torch.nextafter(mid, mid - 1)])
    rnd = torch.randn(1 << 18) * torch.exp2(torch.randint(-24, 10, (1 << 18,)).float())
    edge = torch.linspace(2.0 ** -7, 2.0 ** -5, 20001)     # around the smallest normal 2^-6
    v = torch.cat([pat.view(torch.bfloat16).float(), pat.view(torch.float16).float(), grid, near, -near, rnd, edge,
                   torch.tensor([447.99997, 448.0, -448.0, 0.0, -0.0, 2.0 ** -10, 2.0 ** -10 + 2.0 ** -30])])
    return v[torch.isfinite(v)].clamp(-448.0, 448.0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_conversion_bit_exact_vs_torch(backend):
    """numeric.h float_to_fp8e4m3 (the one conversion of every backend) == torch's .to(float8_e4m3fn) on
    |x| <= 448 (torch's cast is the oracle; it returns NaN from 464 up, so callers clamp or saturate first)."""
    require_backend("quantize_fp8", backend, backend_device(backend))
    v = _special_values()
    _assert_same_fp8(_convert(v, backend), v.to(E4M3))


@pytest.mark.slow
def test_conversion_bit_exact_all_fp32():
    """Every fp32 value with |x| <= 448 (2.2e9 of them, both signs), in chunks: ~2 min on 2 cores."""
    require_backend("quantize_fp8", "cpu")
    top = 0x43E00000  # bits of 448.0
    step = 1 << 24
    for start in range(0, top + 1, step):
        bits = torch.arange(start, min(start + step, top + 1), dtype=torch.int64).to(torch.int32)
        v = bits.view(torch.float32)
        for s in (v, -v):
            _assert_same_fp8(_convert(s, "cpu"), s.to(E4M3))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,granularity,block", CASES)
def test_quantize_matches_reference(backend, dtype, shape, granularity, block):
    dev = backend_device(backend)
    require_backend("quantize_fp8", backend, dev)
    x = (torch.randn(shape) * torch.exp2(torch.randint(-8, 8, shape).float())).to(dtype).to(dev)
    q, s = lk.quantize_fp8(x, granularity=granularity, block=block, backend=backend)
    rq, rs = reference.quantize_fp8_ref(x, granularity=granularity, block=block)
    assert q.dtype == E4M3 and q.shape == x.shape and s.dtype == torch.float32 and s.shape == rs.shape
    assert torch.equal(s, rs)
    _assert_same_fp8(q, rq)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_quantize_strided_and_prefilled(backend):
    dev = backend_device(backend)
    require_backend("quantize_fp8", backend, dev)
    x = torch.randn(6, 40, 128, device=dev).bfloat16().transpose(0, 1)  # non-contiguous view
    q, s = lk.quantize_fp8(x, granularity="token_head", backend=backend)
    rq, rs = reference.quantize_fp8_ref(x, granularity="token_head")
    assert torch.equal(s, rs)
    _assert_same_fp8(q, rq)
    # The op itself writes every element of buffers pre-filled with NaN.
    xc = torch.randn(9, 113, device=dev)
    q = torch.full((9, 113), float("nan"), device=dev).to(E4M3)
    s = torch.full((9,), float("nan"), device=dev)
    torch.ops.liveact.quantize_fp8_fwd(xc, 113, q, s)
    rq, rs = reference.quantize_fp8_ref(xc, granularity="token_head")
    assert torch.equal(s, rs.reshape(-1))
    _assert_same_fp8(q, rq)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))
def test_nan_inf_and_zero_groups(backend):
    dev = backend_device(backend)
    require_backend("quantize_fp8", backend, dev)
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[1.0, nan, 2.0, -inf, inf, -4.0, 0.5, 0.0],   # amax over finite values only: 4
                      [nan, nan, nan, nan, nan, nan, nan, nan],     # no finite value: minimum scale
                      [0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],    # all zero: minimum scale, never 0
                      [inf, -inf, inf, inf, 1e-30, 0, 0, 0]], device=dev)
    q, s = lk.quantize_fp8(x, granularity="token_head", backend=backend)
    s, qb = s.cpu().reshape(-1), _bits(q).cpu().int()
    min_scale = torch.tensor(1e-12, dtype=torch.float32)
    assert s[0] == torch.tensor(4.0) / 448 and s[1] == min_scale and s[2] == min_scale
    assert bool((s > 0).all())
    assert qb[0, 1] & 0x7f == 0x7f and bool((qb[1] & 0x7f == 0x7f).all())          # NaN stays NaN
    assert qb[0, 3] == 0xfe and qb[0, 4] == 0x7e and qb[0, 5] == 0xfe               # -inf, inf, -amax: -+448
    assert qb[3, :4].tolist() == [0x7e, 0xfe, 0x7e, 0x7e]                           # inf saturates
    deq = lk.dequantize_fp8(q, s.to(dev).reshape(4, 1), torch.float32, backend=backend).cpu()
    assert deq[0, 4] == 448 * s[0] and deq[0, 3] == -448 * s[0] and torch.isnan(deq[0, 1])
    assert bool((deq[2] == 0).all())


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_empty(backend):
    dev = backend_device(backend)
    require_backend("quantize_fp8", backend, dev)
    for shape, gran in [((0, 128), "token"), ((4, 0), "token_head"), ((0,), "tensor"), ((0, 5, 2, 128), "token")]:
        x = torch.empty(shape, device=dev)
        q, s = lk.quantize_fp8(x, granularity=gran, backend=backend)
        rq, rs = reference.quantize_fp8_ref(x, granularity=gran)
        assert q.shape == x.shape and torch.equal(s, rs)
        assert lk.dequantize_fp8(q, s, backend=backend).shape == x.shape


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,granularity,block", CASES[1:2] + CASES[4:6] + CASES[7:8] + CASES[10:11])
def test_dequantize_matches_reference(backend, dtype, shape, granularity, block):
    dev = backend_device(backend)
    require_backend("dequantize_fp8", backend, dev)
    x = torch.randn(shape, device=dev)
    q, s = reference.quantize_fp8_ref(x, granularity=granularity, block=block)
    out = lk.dequantize_fp8(q, s, dtype, backend=backend)
    ref = reference.dequantize_fp8_ref(q, s, dtype)
    assert out.dtype == dtype and torch.equal(out, ref)  # the same fp32 product, the same RNE cast


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_dequantize_every_code_and_strided(backend):
    dev = backend_device(backend)
    require_backend("dequantize_fp8", backend, dev)
    q = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(E4M3).reshape(16, 16).to(dev)
    s = torch.rand(16, 1, device=dev) + 0.1
    for dtype in DTYPES:
        out, ref = lk.dequantize_fp8(q, s, dtype, backend=backend), reference.dequantize_fp8_ref(q, s, dtype)
        assert torch.equal(torch.isnan(out), torch.isnan(ref))
        assert torch.equal(out[~torch.isnan(ref)], ref[~torch.isnan(ref)])
    qt = q.t()  # non-contiguous, scale per column of the view
    st = torch.rand(16, 1, device=dev)
    torch.testing.assert_close(lk.dequantize_fp8(qt, st, torch.float32, backend=backend),
                               reference.dequantize_fp8_ref(qt, st, torch.float32), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("granularity", ["tensor", "token", "token_head", "block"])
def test_round_trip_error_bound(backend, granularity):
    """|dequant(quant(x)) - x| <= 2^-4 |x| (RNE to e4m3's 3 mantissa bits: half an ulp of 2^-3) for values in
    the normal range, <= 2^-10 * scale in the subnormal range (half the 2^-9 grid step), plus fp32 slack."""
    dev = backend_device(backend)
    require_backend("quantize_fp8", backend, dev)
    x = torch.randn(4, 16, 8, 128, device=dev) * torch.exp2(torch.randint(-12, 4, (4, 16, 8, 128), device=dev).float())
    q, s = lk.quantize_fp8(x, granularity=granularity, backend=backend)
    y = lk.dequantize_fp8(q, s, torch.float32, backend=backend)
    se = reference.fp8_expand_scale(s, x.shape)
    bound = torch.maximum(x.abs() * 2.0 ** -4, se * 2.0 ** -10) * (1 + 2.0 ** -20)
    assert bool(((y - x).abs() <= bound).all())
    assert bool((y.abs() <= 448 * se * (1 + 2.0 ** -20)).all())


# opcheck's test_schema compares tensors with an arithmetic op that torch does not implement for
# float8_e4m3fn on CPU ("mul_cpu_reduced_float" not implemented), so it cannot run on ops with fp8 arguments;
# the schema's mutation annotations are still exercised by the fake-tensor and AOT-dispatch checks.
OPCHECK_UTILS = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def test_opcheck():
    require_backend("quantize_fp8", "cpu")
    x = torch.randn(6, 64).bfloat16()
    torch.library.opcheck(torch.ops.liveact.quantize_fp8_fwd.default,
                          (x, 64, torch.empty(6, 64, dtype=E4M3), torch.empty(6, 1)), test_utils=OPCHECK_UTILS)
    q, s = reference.quantize_fp8_ref(x, granularity="block", block=32)
    torch.library.opcheck(torch.ops.liveact.dequantize_fp8_fwd.default,
                          (q, s.reshape(-1), 32, torch.empty(6, 64, dtype=torch.bfloat16)), test_utils=OPCHECK_UTILS)


def test_compiles_without_graph_break():
    require_backend("quantize_fp8", "cpu")

    def f(x):
        q, s = lk.quantize_fp8(x, granularity="token_head")
        return lk.dequantize_fp8(q, s, torch.float32) * 2

    x = torch.randn(2, 9, 4, 128).bfloat16()
    got = torch.compile(f, fullgraph=True, backend="inductor")(x)
    q, s = reference.quantize_fp8_ref(x, granularity="token_head")
    assert torch.equal(got, reference.dequantize_fp8_ref(q, s, torch.float32) * 2)


def test_bad_input():
    with pytest.raises(TypeError, match="quantize_fp8: x must have dtype float32/bfloat16/float16, got int32"):
        lk.quantize_fp8(torch.ones(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="quantize_fp8: granularity must be one of"):
        lk.quantize_fp8(torch.ones(2, 4), granularity="row")
    with pytest.raises(ValueError, match=r"multiple of block=128, got shape \(2, 100\)"):
        lk.quantize_fp8(torch.ones(2, 100), granularity="block")
    with pytest.raises(ValueError, match="block must be a positive int, got 0"):
        lk.quantize_fp8(torch.ones(2, 100), granularity="block", block=0)
    with pytest.raises(ValueError, match=r"needs x with at least 1 dim, got shape \(\)"):
        lk.quantize_fp8(torch.tensor(1.0), granularity="token")
    q = torch.zeros(4, 8, dtype=E4M3)
    with pytest.raises(TypeError, match="dequantize_fp8: q must have dtype float8_e4m3fn, got float32"):
        lk.dequantize_fp8(torch.zeros(4, 8), torch.ones(4, 1))
    with pytest.raises(TypeError, match="dequantize_fp8: scale must have dtype float32, got bfloat16"):
        lk.dequantize_fp8(q, torch.ones(4, 1, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"dequantize_fp8: scale shape \(3, 1\) does not give one scale per "
                                         r"contiguous group of q \(4, 8\)"):
        lk.dequantize_fp8(q, torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"scale shape \(4, 3\)"):
        lk.dequantize_fp8(q, torch.ones(4, 3))
    with pytest.raises(TypeError, match="dequantize_fp8: dtype must be float32/bfloat16/float16"):
        lk.dequantize_fp8(q, torch.ones(4, 1), torch.int8)
