"""rms_norm (q/k norm over all 5120 channels): the C++ CPU kernel against eager PyTorch, with the copy
bandwidth of the same bytes as the physical yardstick."""
import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference
from _harness import copy_fn, run

SHAPES = [(4096, 5120)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("provider", ["eager", "cpu", "copy"])
def test_rms_norm(benchmark, provider, shape):
    dtype = torch.bfloat16
    x = torch.randn(shape).to(dtype)
    w = torch.randn(shape[-1]).to(dtype)
    nbytes = 2 * x.numel() * x.element_size()
    if provider == "cpu":
        torch.testing.assert_close(lk.rms_norm(x, w, backend="cpu").float(), reference.rms_norm_ref(x, w).float(),
                                   rtol=2e-2, atol=2e-2)
        out = torch.empty_like(x)
        fn, role = (lambda: lk.rms_norm(x, w, out=out, backend="cpu")), "kernel"
    elif provider == "eager":  # the official composition: fp32 norm, cast back, multiply by the weight
        fn, role = (lambda: (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype) * w), "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="rms_norm", provider=provider, shape="x".join(map(str, shape)), dtype=dtype,
        bytes_moved=nbytes, role=role)
