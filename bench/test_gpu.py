"""GPU benchmarks (skipped without CUDA): attention (Triton, the fused ConvKV cache attention) vs torch SDPA (and
sageattn / flash-attn when installed) in TFLOP/s = 4*B*H*Dh*Nq*Nk / time, and every memory-bound op on both GPU
backends (Triton and the hand-written CUDA kernels) against the eager reference, in GB/s, at LiveAct's shapes.
Each provider is checked against the reference before it is timed. Never run here (no GPU): no GPU figure in this
repository was measured."""
import importlib.util

import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference as R
from liveact_kernels.testing import assert_fp8_close
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


def _mem(name, backend, dev="cuda"):
    """(kernel fn, reference fn, bytes moved[, fn to time]) of a memory-bound op at LiveAct's 720x416 shapes (fl 1170, 40 heads):
    activations (1, 8 frames, 5120) for the adaLN family, one step/layer cache of 14 slots for the cache ops."""
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, device=dev, generator=g)
    x = rnd(1, NQ, H * DH).bfloat16()
    mod = rnd(1, 8, H * DH)
    be = dict(backend=backend)
    if name == "adaln_residual":
        y = rnd(1, NQ, H * DH).bfloat16()
        return (lambda: lk.adaln_residual(x, y, mod, mod, mod, **be)[1]), \
            (lambda: R.adaln_residual_ref(x, y, mod, mod, mod)[1]), 8 * x.numel()
    if name == "adaln_modulate":
        return (lambda: lk.adaln_modulate(x, mod, mod, **be)), (lambda: R.adaln_modulate_ref(x, mod, mod)), \
            4 * x.numel()
    if name == "gated_residual":
        y = rnd(1, NQ, H * DH).bfloat16()
        return (lambda: lk.gated_residual(x, y, mod, **be)), (lambda: R.gated_residual_ref(x, y, mod)), 6 * x.numel()
    if name == "rms_norm":
        return (lambda: lk.rms_norm(x, **be)), (lambda: R.rms_norm_ref(x)), 4 * x.numel()
    if name == "rope3d":
        x4 = x.view(1, NQ, H, DH)
        kw = dict(grid=(8, HG, WG), frame_positions=list(range(6, 14)))
        return (lambda: lk.rope3d(x4, **be, **kw)), (lambda: R.rope3d_ref(x4, **kw)), 4 * x.numel()
    if name == "convkv_compress":
        x5 = rnd(1, 5 * FL, H, DH).bfloat16()
        w = rnd(H * DH, 1, 5)
        return (lambda: lk.convkv_compress(x5, w, **be)), (lambda: R.convkv_compress_ref(x5, w)), 12 * FL * H * DH
    if name == "audio_cross_attention":
        qa = x.view(1, NQ, H, DH)
        ka, va = rnd(1, 8, 32, H, DH).bfloat16(), rnd(1, 8, 32, H, DH).bfloat16()
        return (lambda: lk.audio_cross_attention(qa, ka, va, frame_len=FL, **be)), \
            (lambda: R.audio_cross_attention_ref(qa, ka, va, frame_len=FL)), 4 * qa.numel() + 4 * ka.numel()
    xk = rnd(1, NK, H, DH).bfloat16()
    if name == "quantize_fp8":
        return (lambda: lk.quantize_fp8(xk, granularity="token_head", **be)[0].float()), \
            (lambda: R.quantize_fp8_ref(xk, granularity="token_head")[0].float()), 3 * xk.numel()
    if name == "dequantize_fp8":
        q8, s8 = R.quantize_fp8_ref(xk, granularity="token_head")
        return (lambda: lk.dequantize_fp8(q8, s8, torch.bfloat16, **be)), \
            (lambda: R.dequantize_fp8_ref(q8, s8, torch.bfloat16)), 3 * xk.numel()
    # convkv_cache_update, steady state (block >= 2), FP8 cache: reads 10 slots, moves 2, writes 2 + 8 new ones
    ck0, cs0 = R.quantize_fp8_ref(xk, granularity="token_head")
    cv0, vs0 = R.quantize_fp8_ref(rnd(1, NK, H, DH).bfloat16(), granularity="token_head")
    nk, nv = rnd(1, 8 * FL, H, DH).bfloat16(), rnd(1, 8 * FL, H, DH).bfloat16()
    w = rnd(H * DH, 1, 5) / 5

    def upd(fn):
        def f():
            ck, cv, ks, vs = ck0.clone(), cv0.clone(), cs0.clone(), vs0.clone()
            fn(ck, cv, nk, nv, w, frame_len=FL, k_scale=ks, v_scale=vs, block=2)
            return torch.cat([(ck.float() * ks).flatten(), (cv.float() * vs).flatten()])
        return f
    cache_update = (lambda *a, **k: lk.convkv_cache_update(*a, **k, **be))
    # timed without the clones: the update runs in place on one cache, repeatedly (a steady-state step)
    ck, cv, ks, vs = ck0.clone(), cv0.clone(), cs0.clone(), vs0.clone()
    timed = (lambda: cache_update(ck, cv, nk, nv, w, frame_len=FL, k_scale=ks, v_scale=vs, block=2))
    slot = FL * H * DH
    return (upd(cache_update), upd(R.convkv_cache_update_ref),
            # K and V each: read 10 fp8 slots, write 2 compressed, move 2 (read + write), read 8 bf16 new slots and
            # write them as fp8 (40 slot-bytes), plus the fp32 per-(token, head) scales of 24 slot reads/writes
            2 * (40 * slot + 24 * FL * H * 4), timed)


MEMORY_BOUND = ["adaln_residual", "adaln_modulate", "gated_residual", "rms_norm", "rope3d", "convkv_compress",
                "audio_cross_attention", "quantize_fp8", "dequantize_fp8", "convkv_cache_update"]


@pytest.mark.parametrize("backend", ["triton", "cuda", "torch"])
@pytest.mark.parametrize("name", MEMORY_BOUND)
def test_memory_bound_gpu(benchmark, name, backend):
    """Each GPU backend, and the eager torch reference as the baseline, in GB/s; checked before it is timed."""
    reason = lk._backend.why_unavailable(name, backend, torch.device("cuda"))
    if reason is not None:
        pytest.skip(reason)
    fn, ref, nbytes, *to_time = _mem(name, backend)
    got, want = fn(), ref()
    # a coarse check before timing (cosine / relative L1 / RMSE gates): it catches a wrong or never-launched
    # kernel; the per-op tests in tests/ hold the tolerance rule
    assert_fp8_close(got, want.float())
    timed = to_time[0] if to_time else fn
    run(benchmark, _sync(timed), op=name, provider=backend, shape="liveact-720x416", dtype=torch.bfloat16,
        bytes_moved=nbytes, role="baseline" if backend == "torch" else "kernel")
    benchmark.extra_info["GB/s"] = nbytes / benchmark.stats.stats.median / 1e9
