"""quantize_fp8 / dequantize_fp8 at the FP8 KV-cache layout (token_head scales, bf16): the C++ CPU kernels
against the eager PyTorch composition they replace, with the copy bandwidth of the same bytes as yardstick.
Shape: [1, 4096, 40, 128] (LiveAct's cache is [1, 16380, 40, 128]; 4096 tokens keep a round near 0.1 s on 2 cores)."""
import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference
from _harness import copy_fn, run

SHAPES = [(1, 4096, 40, 128)]
DTYPE = torch.bfloat16


def _sid(s):
    return "x".join(map(str, s))


def _eager_quantize(x):
    """The official cache quantisation (reference-model.md §4.4) with our fp32 scale: amax per (token, head)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = torch.clamp(amax / 448.0, min=1e-12)
    return (x.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn), scale


@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("provider", ["eager", "cpu", "copy"])
def test_quantize_fp8(benchmark, provider, shape):
    x = torch.randn(shape).to(DTYPE)
    n = x.numel()
    nbytes = n * x.element_size() + n + (n // shape[-1]) * 4  # read x, write q and the scales
    if provider == "cpu":
        q, s = lk.quantize_fp8(x, granularity="token_head", backend="cpu")
        rq, rs = reference.quantize_fp8_ref(x, granularity="token_head")
        assert torch.equal(s, rs) and torch.equal(q.view(torch.uint8), rq.view(torch.uint8))
        fn, role = (lambda: lk.quantize_fp8(x, granularity="token_head", backend="cpu")), "kernel"
    elif provider == "eager":
        fn, role = (lambda: _eager_quantize(x)), "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="quantize_fp8", provider=provider, shape=_sid(shape), dtype=DTYPE, bytes_moved=nbytes,
        role=role)


@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("provider", ["eager", "cpu", "copy"])
def test_dequantize_fp8(benchmark, provider, shape):
    x = torch.randn(shape).to(DTYPE)
    q, s = reference.quantize_fp8_ref(x, granularity="token_head")
    n = x.numel()
    nbytes = n + (n // shape[-1]) * 4 + n * 2  # read q and the scales, write bf16
    if provider == "cpu":
        assert torch.equal(lk.dequantize_fp8(q, s, DTYPE, backend="cpu"), reference.dequantize_fp8_ref(q, s, DTYPE))
        fn, role = (lambda: lk.dequantize_fp8(q, s, DTYPE, backend="cpu")), "kernel"
    elif provider == "eager":  # the official load path: q.bf16 * scale.bf16
        fn, role = (lambda: q.to(DTYPE) * s.to(DTYPE)), "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="dequantize_fp8", provider=provider, shape=_sid(shape), dtype=DTYPE, bytes_moved=nbytes,
        role=role)
