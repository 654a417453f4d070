"""Streaming pipeline speed on the tiny preset: one block (3 denoising steps, audio on steps 1-2) with the
kernel backends (backend="auto") against backend="torch" in the same run, and the memory high-water mark
over a long stream (must stay flat)."""
import itertools
import resource

import pytest
import torch

from liveact_model import LiveActModel, tiny
from liveact_model.pipeline import LiveActPipeline
from _harness import run

LATENT_HW = (16, 16)


@pytest.fixture(autouse=True)
def _one_thread():
    # the tiny model is ~1k small ops per step: with 2 OpenMP threads on a shared, loaded machine the spin
    # waits dominate (measured 5.8 s vs ~0.05 s per block at load 11), so the pipeline bench is single-threaded
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)   # 128x128 px: 64 tokens per latent frame, 512 query / 896 key tokens per block


def _stream(backend, dtype=torch.bfloat16, memory_dtype=None):
    cfg = tiny()
    m = LiveActModel(cfg, backend=backend).init_weights(0).to(dtype)
    g = torch.Generator().manual_seed(0)
    p = LiveActPipeline(m, backend=backend, memory_dtype=memory_dtype)
    p.start(image_latent=torch.randn(1, cfg.out_dim, cfg.window_frames, *LATENT_HW, generator=g).to(dtype),
            text=torch.randn(1, 5, cfg.text_dim, generator=g).to(dtype),
            clip=torch.randn(1, cfg.clip_tokens, cfg.clip_dim, generator=g).to(dtype))
    chunk = torch.randn(32, cfg.audio_layers, cfg.audio_channels, generator=g).to(dtype)
    gen = p.stream(itertools.repeat(chunk))     # endless streamed input: one block per next()
    for _ in range(3):                          # reach the steady state (compression active)
        next(gen)
    return p, gen


@pytest.mark.parametrize("memory", ["bf16", "fp8"])
@pytest.mark.parametrize("provider", ["torch", "auto"])
def test_pipeline_block(benchmark, provider, memory):
    mdt = torch.float8_e4m3fn if memory == "fp8" else None
    p, gen = _stream(provider, memory_dtype=mdt)
    benchmark.extra_info["video_frames_per_block"] = 32
    run(benchmark, lambda: next(gen), op=f"pipeline_block_tiny_{memory}kv", provider=provider,
        shape="x".join(map(str, LATENT_HW)), dtype=torch.bfloat16, role="baseline" if provider == "torch" else "kernel")


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _peak_mb(reset=False):
    """The process's RSS high-water mark (VmHWM); reset=True first resets it to the current RSS (Linux: writing 5
    to /proc/self/clear_refs), so that the mark covers only what follows, not earlier benchmarks."""
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_pipeline_memory_high_water(benchmark):
    # not a timing: the stream's memory (KV bytes, RSS and its high-water mark) must not grow with the blocks
    p, gen = _stream("auto")
    marks = {}
    for n in range(3, 103):
        next(gen)
        if n in (3, 20, 60, 102):
            marks[n] = (p.memory.nbytes, round(_rss_mb(), 1), round(_peak_mb(reset=n == 20), 1))
    benchmark.extra_info.update({"role": "memory", "op": "pipeline_memory", "kv_bytes_rss_mb_peak_mb": marks})
    run(benchmark, lambda: next(gen), op="pipeline_memory", provider="auto", shape="x".join(map(str, LATENT_HW)),
        dtype=torch.bfloat16, role="memory")
    kv = {v[0] for v in marks.values()}
    assert len(kv) == 1, f"KV cache size changed over the stream: {marks}"
    assert marks[102][1] - marks[20][1] < 8.0, f"RSS grew from block 20 to 102: {marks}"
    assert marks[102][2] - marks[20][2] < 8.0, f"RSS high-water mark grew from block 20 to 102: {marks}"
