"""GPU benchmarks of the Triton kernels (skipped without CUDA): attention vs torch SDPA (and sageattn /
flash-attn when installed) in TFLOP/s = 4*B*H*Dh*Nq*Nk / time, and the memory-bound kernels in GB/s, at
LiveAct's shapes. Each provider is checked against the reference before it is timed."""
import importlib.util

import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference as R
from liveact_kernels.testing import assert_close_to_ref, assert_fp8_close
from _harness import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU benchmarks need a CUDA device")

H, DH, FL, HG, WG = 40, 128, 1170, 26, 45
NQ, NK = 8 * FL, 14 * FL


def _sync(fn):
    def f():
        fn()
        torch.cuda.synchronize()
    return f


def _attn_inputs(nq=NQ, nk=NK):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, nq, H, DH, device="cuda", generator=g).bfloat16()
    k = torch.randn(1, nk, H, DH, device="cuda", generator=g).bfloat16()
    v = torch.randn(1, nk, H, DH, device="cuda", generator=g).bfloat16()
    return q, k, v


ATTN_PROVIDERS = ["triton_bf16", "sdpa_bf16", "triton_fp8kv", "dequant_then_sdpa", "cache_attention_fp8",
                  "cache_attention_fp8_pvfp8", "sageattn", "flash_attn"]


@pytest.mark.parametrize("provider", ATTN_PROVIDERS)
@pytest.mark.parametrize("nq,nk", [(NQ, NK), (6 * FL, 6 * FL), (4096, 4096)])
def test_attention_gpu(benchmark, provider, nq, nk):
    q, k, v = _attn_inputs(nq, nk)
    kq, ks = R.quantize_fp8_ref(k, granularity="token_head")
    vq, vs = R.quantize_fp8_ref(v, granularity="token_head")
    flops = 4.0 * H * DH * nq * nk
    sdpa = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    if provider == "triton_bf16":
        fn = lambda: lk.attention(q, k, v, tensor_layout="NHD", backend="triton")  # noqa: E731
    elif provider == "sdpa_bf16":
        fn = lambda: sdpa(q, k, v)  # noqa: E731
    elif provider == "triton_fp8kv":
        fn = lambda: lk.attention(q, kq, vq, tensor_layout="NHD", k_scale=ks, v_scale=vs, backend="triton")  # noqa
    elif provider == "dequant_then_sdpa":
        fn = lambda: sdpa(q, (kq.bfloat16() * ks.bfloat16()), (vq.bfloat16() * vs.bfloat16()))  # noqa: E731
    elif provider.startswith("cache_attention"):
        if nk % FL or nq % FL:
            pytest.skip("cache_attention needs whole frames of 1170 tokens")
        from liveact_kernels.triton.cache_attention import cache_attention
        qpos = list(range(nk // FL - nq // FL, nk // FL))
        fn = lambda: cache_attention(q, kq, vq, k_scale=ks, v_scale=vs, grid_hw=(HG, WG),  # noqa: E731
                                     q_frame_positions=qpos, pv_fp8=provider.endswith("pvfp8"))
    elif provider == "sageattn":
        if importlib.util.find_spec("sageattention") is None:
            pytest.skip("sageattention is not installed")
        from sageattention import sageattn
        fn = lambda: sageattn(q, k, v, tensor_layout="NHD", is_causal=False)  # noqa: E731
    else:
        if importlib.util.find_spec("flash_attn") is None:
            pytest.skip("flash-attn is not installed")
        from flash_attn import flash_attn_func
        fn = lambda: flash_attn_func(q, k, v)  # noqa: E731
    out = fn()
    if not provider.startswith("cache_attention"):
        assert_fp8_close(out, sdpa(q.float(), k.float(), v.float()))
    result = run(benchmark, _sync(fn), op="attention", provider=provider, shape=f"1x{H}x{nq}x{nk}x{DH}",
                 dtype=torch.bfloat16, flops=flops, role="baseline" if provider in ("sdpa_bf16", "dequant_then_sdpa",
                                                                                   "sageattn", "flash_attn")
                 else "kernel")
    benchmark.extra_info["tflops"] = flops / benchmark.stats.stats.median / 1e12
    return result


def _mem(name):
    x = torch.randn(1, NQ, H * DH, device="cuda").bfloat16()
    mod = torch.randn(1, 8, H * DH, device="cuda")
    if name == "adaln_residual":
        y = torch.randn_like(x)
        fn = lambda: lk.adaln_residual(x, y, mod, mod, mod, backend="triton")  # noqa: E731
        ref = lambda: R.adaln_residual_ref(x, y, mod, mod, mod)[1]  # noqa: E731
        return (lambda: fn()[1]), ref, 8 * x.numel()
    if name == "rms_norm":
        return (lambda: lk.rms_norm(x, backend="triton")), (lambda: R.rms_norm_ref(x)), 4 * x.numel()
    if name == "rope3d":
        x4 = x.view(1, NQ, H, DH)
        kw = dict(grid=(8, HG, WG), frame_positions=list(range(6, 14)))
        return (lambda: lk.rope3d(x4, backend="triton", **kw)), (lambda: R.rope3d_ref(x4, **kw)), 4 * x.numel()
    if name == "convkv_compress":
        x5 = torch.randn(1, 5 * FL, H, DH, device="cuda").bfloat16()
        w = torch.randn(H * DH, 1, 5, device="cuda")
        return (lambda: lk.convkv_compress(x5, w, backend="triton")), \
            (lambda: R.convkv_compress_ref(x5, w)), 12 * FL * H * DH
    xk = torch.randn(1, NK, H, DH, device="cuda").bfloat16()
    return (lambda: lk.quantize_fp8(xk, granularity="token_head", backend="triton")[0].float()), \
        (lambda: R.quantize_fp8_ref(xk, granularity="token_head")[0].float()), 3 * xk.numel()


@pytest.mark.parametrize("name", ["adaln_residual", "rms_norm", "rope3d", "convkv_compress", "quantize_fp8"])
def test_memory_bound_gpu(benchmark, name):
    fn, ref, nbytes = _mem(name)
    got, want = fn(), ref()
    assert_close_to_ref(got, want.float(), want, k=4.0)
    run(benchmark, _sync(fn), op=name, provider="triton", shape="liveact", dtype=torch.bfloat16, bytes_moved=nbytes)
    benchmark.extra_info["GB/s"] = nbytes / benchmark.stats.stats.median / 1e9
