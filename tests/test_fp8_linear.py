"""fp8_linear (W8A8): the CPU kernel against the reference (exact up to fp32 accumulation order), against the
unquantised fp32 linear (FP8 gates), the torch._scaled_mm call of the CUDA path, FP8Linear /
quantize_linears, opcheck, torch.compile, bad input."""
import pytest
import torch
from torch import nn

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.fp8_linear import scaled_mm_linear
from liveact_kernels.testing import assert_fp8_close
from conftest import KERNEL_BACKENDS, backend_device, require_backend

E4M3 = torch.float8_e4m3fn
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _weights(N, K, per_channel, dev="cpu"):
    w = torch.randn(N, K, device=dev) * (torch.rand(N, 1, device=dev) + 0.1)
    return lk.quantize_fp8(w, granularity="token" if per_channel else "tensor", backend="torch")


def _assert_exact_up_to_order(out, x, wq, ws, bias, out_dtype):
    """The kernel and the reference sum the same exact fp32 products (e4m3 x e4m3 fits 8 bits) in different
    orders: |diff| <= K * 2^-24 * sum|products| * |x_scale * w_scale| (the standard summation bound), plus one
    ulp of the output dtype when both round that fp32 value to bf16/fp16."""
    ref = reference.fp8_linear_ref(x, wq, ws, bias, out_dtype=out_dtype).float()
    K = x.shape[-1]
    xq, xs = reference.quantize_fp8_ref(x.reshape(-1, K), granularity="token")
    wsr = ws.float().reshape(-1)
    absacc = xq.float().abs() @ wq.float().abs().t() * xs * (wsr[None, :] if wsr.numel() > 1 else wsr)
    bound = K * 2.0 ** -24 * absacc.reshape(ref.shape) + 1e-30
    if out_dtype != torch.float32:
        bound = bound + ref.abs() * torch.finfo(out_dtype).eps
    err = (out.float() - ref).abs()
    assert out.dtype == out_dtype and out.shape == ref.shape
    assert bool((err <= bound).all()), f"max err {err.max().item():.3g}, worst excess {(err - bound).max().item():.3g}"


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 7, 1), (7, 113, 33), (113, 64, 1170), (300, 600, 520), (4, 1024, 96)])
def test_fp8_linear_matches_reference(backend, out_dtype, M, K, N):
    dev = backend_device(backend)
    require_backend("fp8_linear", backend, dev)
    x = torch.randn(M, K, device=dev).to(out_dtype)
    wq, ws = _weights(N, K, per_channel=True, dev=dev)
    bias = torch.randn(N, device=dev)
    out = lk.fp8_linear(x, wq, ws.reshape(N), bias, backend=backend)
    _assert_exact_up_to_order(out, x, wq, ws.reshape(N), bias, out_dtype)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_fp8_linear_per_tensor_no_bias_batched_strided(backend):
    dev = backend_device(backend)
    require_backend("fp8_linear", backend, dev)
    x = torch.randn(2, 3, 40, 96, device=dev).bfloat16()[:, :, ::2]  # (2, 3, 20, 96), non-contiguous
    wq, ws = _weights(80, 96, per_channel=False, dev=dev)
    out = lk.fp8_linear(x, wq, ws, None, out_dtype=torch.float32, backend=backend)
    assert out.shape == (2, 3, 20, 80)
    _assert_exact_up_to_order(out, x, wq, ws, None, torch.float32)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))
def test_fp8_linear_vs_unquantised(backend):
    """W8A8 against the fp32 linear of the unquantised x and W: one e4m3 rounding on each operand."""
    dev = backend_device(backend)
    require_backend("fp8_linear", backend, dev)
    x, w, b = torch.randn(64, 512, device=dev), torch.randn(256, 512, device=dev) * 0.05, torch.randn(256, device=dev)
    wq, ws = lk.quantize_fp8(w, granularity="token")
    out = lk.fp8_linear(x, wq, ws.reshape(-1), b, backend=backend)
    m = assert_fp8_close(out, torch.nn.functional.linear(x, w, b))
    assert m["cos"] > 0.999  # measured 0.9996 (seed 0): independent per-element roundings average out over K = 512


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_fp8_linear_empty(backend):
    dev = backend_device(backend)
    require_backend("fp8_linear", backend, dev)
    wq, ws = _weights(16, 32, True, dev)
    assert lk.fp8_linear(torch.empty(0, 32, device=dev), wq, ws, backend=backend).shape == (0, 16)
    wq0 = torch.empty(8, 0, dtype=E4M3, device=dev)
    b = torch.randn(8, device=dev)
    out = lk.fp8_linear(torch.empty(3, 0, device=dev), wq0, torch.ones(8, device=dev), b, backend=backend)
    assert torch.equal(out, b.expand(3, 8))


def test_scaled_mm_call_of_the_cuda_path():
    """The exact torch._scaled_mm call the CUDA backend makes on sm_89+ (rowwise scales, bf16 out, bf16 bias),
    run through torch's CPU implementation and on the meta device (shape/dtype contract)."""
    M, K, N = 48, 64, 32
    x = torch.randn(M, K)
    xq, xs = reference.quantize_fp8_ref(x, granularity="token")
    wq, ws = _weights(N, K, True)
    bias = torch.randn(N).bfloat16()
    out = scaled_mm_linear(xq, xs, wq, ws.reshape(N), bias, torch.bfloat16)
    _assert_exact_up_to_order(out, x, wq, ws.reshape(N), bias, torch.bfloat16)
    meta = scaled_mm_linear(xq.to("meta"), xs.to("meta"), wq.to("meta"), ws.reshape(N).to("meta"),
                            bias.to("meta"), torch.bfloat16)
    assert meta.shape == (M, N) and meta.dtype == torch.bfloat16


def test_fp8_linear_module_and_quantize_linears():
    require_backend("fp8_linear", "cpu")
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Sequential(nn.Linear(256, 64, bias=False)),
                          nn.Linear(64, 32))
    x = torch.randn(4, 10, 128)
    with torch.no_grad():
        ref = model(x)
        lk.quantize_linears(model, filter=lambda name, m: name != "3")
        assert isinstance(model[0], lk.FP8Linear) and isinstance(model[2][0], lk.FP8Linear)
        assert type(model[3]) is nn.Linear and model[2][0].bias is None
        assert model[0].weight_scale.shape == (256,) and model[0].weight_q.dtype == E4M3
        out = model(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert_fp8_close(out, ref)
    sd = model.state_dict()
    assert {"0.weight_q", "0.weight_scale", "0.bias", "2.0.weight_q", "3.weight"} <= set(sd)
    lin = nn.Linear(64, 48).bfloat16()
    m = lk.quantize_linears(lin, granularity="tensor")  # a bare Linear is returned as a new module
    assert isinstance(m, lk.FP8Linear) and m.weight_scale.shape == () and m.bias.dtype == torch.bfloat16
    xb = torch.randn(5, 64).bfloat16()
    with torch.no_grad():
        assert_fp8_close(m(xb), lin(xb).float())


def test_opcheck():
    require_backend("fp8_linear", "cpu")
    xq, xs = reference.quantize_fp8_ref(torch.randn(8, 64), granularity="token")
    wq, ws = _weights(32, 64, True)
    # test_schema cannot run on fp8 arguments (see tests/test_fp8.py OPCHECK_UTILS).
    torch.library.opcheck(torch.ops.liveact.fp8_linear_fwd.default,
                          (xq, xs.reshape(-1), wq, ws.reshape(-1), torch.randn(32), torch.empty(8, 32)),
                          test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_compiles_without_graph_break():
    require_backend("fp8_linear", "cpu")
    wq, ws = _weights(48, 64, True)
    b = torch.randn(48)
    f = torch.compile(lambda x: lk.fp8_linear(x, wq, ws.reshape(-1), b) * 2, fullgraph=True, backend="inductor")
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(f(x), lk.fp8_linear(x, wq, ws.reshape(-1), b, backend="cpu") * 2, rtol=0, atol=0)


def test_bad_input():
    wq, ws = _weights(16, 32, True)
    with pytest.raises(ValueError, match=r"fp8_linear: x must have shape \(\.\.\., 32\) to match weight_q \(16, 32\), "
                                         r"got \(4, 31\)"):
        lk.fp8_linear(torch.randn(4, 31), wq, ws)
    with pytest.raises(TypeError, match="fp8_linear: weight_q must have dtype float8_e4m3fn, got float32"):
        lk.fp8_linear(torch.randn(4, 32), wq.float(), ws)
    with pytest.raises(ValueError, match=r"fp8_linear: weight_scale must have shape \(\), \(1,\), \(16,\) or "
                                         r"\(16, 1\), got \(8,\)"):
        lk.fp8_linear(torch.randn(4, 32), wq, torch.ones(8))
    with pytest.raises(ValueError, match=r"fp8_linear: bias must have shape \(16\), got \(15,\)"):
        lk.fp8_linear(torch.randn(4, 32), wq, ws, torch.randn(15))
    with pytest.raises(TypeError, match="fp8_linear: out_dtype must be float32/bfloat16/float16"):
        lk.fp8_linear(torch.randn(4, 32), wq, ws, out_dtype=torch.int32)
    with pytest.raises(ValueError, match="fp8_linear: all tensors must be on one device"):
        lk.fp8_linear(torch.randn(4, 32), wq, ws.to("meta"))
    with pytest.raises(ValueError, match="FP8Linear: granularity must be 'channel' or 'tensor'"):
        lk.FP8Linear(4, 4, granularity="block")
