"""audio_cross_attention (each latent frame's tokens attend to its frame's 32 audio tokens): the C++ CPU kernel
against the official batched-SDPA formulation (batch = frames), in GB/s, with a tensor copy of the same bytes."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from _harness import copy_fn, run

# (B, T frames, frame_len, H, Dh): a 4-frame chunk at 416x720 (1170 tokens per latent frame), 40 heads
SHAPES = [(1, 4, 1170, 40, 128)]
N_A = 32


def _label(s):
    return "B{}xT{}xfl{}xH{}xD{}".format(*s)


@pytest.mark.parametrize("shape", SHAPES, ids=_label)
@pytest.mark.parametrize("provider", ["cpu", "cpu_out", "batched_sdpa", "copy"])
def test_audio_cross_attention(benchmark, provider, shape):
    B, T, fl, H, Dh = shape
    dtype = torch.bfloat16
    q = torch.randn(B, T * fl, H, Dh).to(dtype)
    k = torch.randn(B, T, N_A, H, Dh).to(dtype)
    v = torch.randn(B, T, N_A, H, Dh).to(dtype)
    nbytes = (2 * q.numel() + 2 * k.numel()) * q.element_size()  # read q, k, v; write out

    def batched_sdpa():  # model_liveact/attention.py: q viewed as [T, H, fl, Dh], K/V [T, H, 32, Dh]
        qq = q.view(B * T, fl, H, Dh).transpose(1, 2)
        kk = k.view(B * T, N_A, H, Dh).transpose(1, 2)
        vv = v.view(B * T, N_A, H, Dh).transpose(1, 2)
        return F.scaled_dot_product_attention(qq, kk, vv).transpose(1, 2).reshape(B, T * fl, H, Dh)

    if provider == "cpu":
        ref = reference.audio_cross_attention_ref(q, k, v, frame_len=fl)
        torch.testing.assert_close(lk.audio_cross_attention(q, k, v, frame_len=fl, backend="cpu").float(),
                                   ref.float(), rtol=2e-2, atol=2e-2)
        fn, role = (lambda: lk.audio_cross_attention(q, k, v, frame_len=fl, backend="cpu")), "kernel"
    elif provider == "cpu_out":  # a persistent output buffer: no fresh 48 MB allocation (page faults) per call
        out = torch.empty_like(q)
        fn, role = (lambda: lk.audio_cross_attention(q, k, v, frame_len=fl, out=out, backend="cpu")), "kernel"
    elif provider == "batched_sdpa":
        fn, role = batched_sdpa, "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="audio_cross_attention", provider=provider, shape=_label(shape), dtype=dtype,
        bytes_moved=nbytes, role=role)
