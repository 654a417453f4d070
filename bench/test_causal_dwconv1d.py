"""causal_dwconv1d at [1, 1024, 4096] bf16 (width 4, stride 1, silu) and with stride 5 / width 5: the C++ CPU
kernel against the eager F.conv1d formulation (causal-conv1d's reference), with the copy bandwidth of the
same bytes as the yardstick."""
import pytest
import torch
import torch.nn.functional as F

import liveact_kernels as lk
from liveact_kernels import reference
from _harness import copy_fn, run

CASES = [(4, 1), (5, 5)]  # (width, stride)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"W{c[0]}s{c[1]}")
@pytest.mark.parametrize("provider", ["eager_conv1d", "torch_backend", "cpu", "copy"])
def test_causal_dwconv1d(benchmark, provider, case):
    W, stride = case
    dtype, B, C, L = torch.bfloat16, 1, 1024, 4096
    x = torch.randn(B, C, L).to(dtype)
    w, b = torch.randn(C, W), torch.randn(C)
    nbytes = x.numel() * 2 + x.numel() // stride * 2
    if provider == "cpu":
        torch.testing.assert_close(
            lk.causal_dwconv1d(x, w, b, stride=stride, activation="silu", backend="cpu").float(),
            reference.causal_dwconv1d_ref(x, w, b, stride=stride, activation="silu").float(), rtol=2e-2, atol=2e-2)
        fn, role = (lambda: lk.causal_dwconv1d(x, w, b, stride=stride, activation="silu", backend="cpu")), "kernel"
    elif provider == "torch_backend":   # what backend="auto" would run without the compiled kernel (fp32 reference)
        fn, role = (lambda: lk.causal_dwconv1d(x, w, b, stride=stride, activation="silu", backend="torch")), "baseline"
    elif provider == "eager_conv1d":
        wd, bd = w.to(dtype)[:, None, :], b.to(dtype)
        fn, role = (lambda: F.silu(F.conv1d(x, wd, bd, stride=stride, padding=W - 1, groups=C)[..., : (L + stride - 1) // stride])), "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="causal_dwconv1d", provider=provider, shape=f"{B}x{C}x{L}-W{W}s{stride}", dtype=dtype,
        bytes_moved=nbytes, role=role)
