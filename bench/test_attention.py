"""attention: the C++ CPU kernel against torch SDPA (bf16) and against the official FP8-cache path
(dequantise K/V to bf16, then SDPA), TFLOP/s = 4 * B * H * Dh * Nq * Nk."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_fp8_close
from _harness import run

# (B, H, Nq, Nk, Dh): long-context shapes scaled to 2 cores, and a LiveAct block (8 current frames against
# the 14-frame cache at a small frame_len of 64 tokens, 40 heads)
SHAPES = [(1, 8, 1024, 4096, 128), (1, 8, 2048, 2048, 128), (1, 40, 8 * 64, 14 * 64, 128)]


def _label(s):
    return "B{}xH{}xNq{}xNk{}xD{}".format(*s)


def _inputs(shape):
    B, H, Nq, Nk, Dh = shape
    q = torch.randn(B, Nq, H, Dh).bfloat16()
    k = torch.randn(B, Nk, H, Dh).bfloat16()
    v = torch.randn(B, Nk, H, Dh).bfloat16()
    return q, k, v


def _sdpa(q, k, v):  # NHD in and out, as LiveAct calls it
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("shape", SHAPES, ids=_label)
@pytest.mark.parametrize("provider", ["cpu", "sdpa"])
def test_attention_bf16(benchmark, provider, shape):
    q, k, v = _inputs(shape)
    flops = 4.0 * shape[0] * shape[1] * shape[4] * shape[2] * shape[3]
    if provider == "cpu":
        torch.testing.assert_close(lk.attention(q, k, v, tensor_layout="NHD", backend="cpu").float(),
                                   _sdpa(q, k, v).float(), rtol=2e-2, atol=2e-2)
        fn, role = (lambda: lk.attention(q, k, v, tensor_layout="NHD", backend="cpu")), "kernel"
    else:
        fn, role = (lambda: _sdpa(q, k, v)), "baseline"
    run(benchmark, fn, op="attention", provider=provider, shape=_label(shape), dtype=torch.bfloat16, flops=flops,
        role=role)


@pytest.mark.parametrize("shape", SHAPES, ids=_label)
@pytest.mark.parametrize("provider", ["cpu", "dequant_sdpa"])
def test_attention_fp8_kv(benchmark, provider, shape):
    q, k, v = _inputs(shape)
    kq, ks = reference.quantize_fp8_ref(k, granularity="token_head")
    vq, vs = reference.quantize_fp8_ref(v, granularity="token_head")
    flops = 4.0 * shape[0] * shape[1] * shape[4] * shape[2] * shape[3]
    if provider == "cpu":
        assert_fp8_close(lk.attention(q, kq, vq, tensor_layout="NHD", k_scale=ks, v_scale=vs, backend="cpu"),
                         _sdpa(q.float(), k.float(), v.float()))
        fn, role = (lambda: lk.attention(q, kq, vq, tensor_layout="NHD", k_scale=ks, v_scale=vs, backend="cpu")), \
            "kernel"
    else:  # the official FP8 KV cache: q.bf16 * scale.bf16 into a bf16 temporary, then attention
        fn, role = (lambda: _sdpa(q, kq.bfloat16() * ks.bfloat16(), vq.bfloat16() * vs.bfloat16())), "baseline"
    run(benchmark, fn, op="attention_fp8kv", provider=provider, shape=_label(shape), dtype="fp8_e4m3_kv",
        flops=flops, role=role)
