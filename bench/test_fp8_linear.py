"""fp8_linear (W8A8, per-token activation and per-channel weight scales, bf16 out): the C++ CPU kernel (exact
fp8 -> bf16 packing + AMX GEMM) against the bf16 F.linear of the unquantised layer and against eager
dequantise-then-matmul, in TFLOP/s. Shape M=1024, K=N=4096 (a Wan2.1-14B layer is K=N=5120 at M up to 9360;
this size keeps each round under a second on 2 cores)."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_fp8_close
from _harness import run

SHAPES = [(1024, 4096, 4096)]
DTYPE = torch.bfloat16


def _sid(s):
    return "M{}_K{}_N{}".format(*s)


@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("provider", ["bf16_linear", "eager_dequant_matmul", "torch_backend", "cpu"])
def test_fp8_linear(benchmark, provider, shape):
    M, K, N = shape
    x = torch.randn(M, K).to(DTYPE)
    w = (torch.randn(N, K) * K ** -0.5).to(DTYPE)
    b = torch.randn(N).to(DTYPE)
    wq, ws = lk.quantize_fp8(w, granularity="token")
    ws = ws.reshape(N)
    if provider == "cpu":
        got = lk.fp8_linear(x, wq, ws, b, backend="cpu")
        assert_fp8_close(got, F.linear(x.float(), w.float(), b.float()))
        torch.testing.assert_close(got, reference.fp8_linear_ref(x, wq, ws, b), rtol=1.6e-2, atol=1e-3)
        fn, role = (lambda: lk.fp8_linear(x, wq, ws, b, backend="cpu")), "kernel"
    elif provider == "torch_backend":   # what backend="auto" would run without the compiled kernel (reference)
        fn, role = (lambda: lk.fp8_linear(x, wq, ws, b, backend="torch")), "baseline"
    elif provider == "bf16_linear":
        fn, role = (lambda: F.linear(x, w, b)), "baseline"
    else:  # what a framework without an FP8 GEMM does: quantise x, dequantise both to bf16, bf16 matmul
        def fn():
            xq, xs = reference.quantize_fp8_ref(x, granularity="token")
            return (F.linear(xq.to(DTYPE), wq.to(DTYPE)).float() * xs * ws + b.float()).to(DTYPE)
        role = "baseline"
    run(benchmark, fn, op="fp8_linear", provider=provider, shape=_sid(shape), dtype=DTYPE, flops=2.0 * M * N * K,
        role=role)
