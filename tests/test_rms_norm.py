"""rms_norm: CPU/CUDA/Triton kernels against the fp32 reference, strided inputs, NaN-prefilled outputs,
opcheck, torch.compile, bad input."""
import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref, nan_like, strided
from conftest import KERNEL_BACKENDS, backend_device, require_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _ref_pair(x, w, eps=1e-6):
    ref32 = reference.rms_norm_ref(x.float(), None if w is None else w.float(), eps=eps)
    lowp = reference.rms_norm_ref(x, w, eps=eps)  # same math, rounded to x.dtype: the rule's yardstick
    return ref32, lowp


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 113), (3, 5, 1024), (2, 1170), (1, 4, 5120)])
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_fwd(backend, dtype, shape, with_weight):
    dev = backend_device(backend)
    require_backend("rms_norm", backend, dev)
    x = torch.randn(shape, device=dev).to(dtype)
    w = torch.randn(shape[-1], device=dev).to(dtype) if with_weight else None
    out = nan_like(x)
    got = lk.rms_norm(x, w, out=out, backend=backend)
    assert got is out
    ref32, lowp = _ref_pair(x, w)
    assert_close_to_ref(got, ref32, lowp)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))  # torch: the public reference path
def test_rms_norm_strided_and_empty(backend):
    dev = backend_device(backend)
    require_backend("rms_norm", backend, dev)
    x = strided(torch.randn(6, 257, device=dev).bfloat16(), dim=-1)
    assert not x.is_contiguous()
    ref32, lowp = _ref_pair(x, None)
    assert_close_to_ref(lk.rms_norm(x, backend=backend), ref32, lowp)
    e = torch.empty(0, 64, device=dev)
    assert lk.rms_norm(e, backend=backend).shape == (0, 64)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))  # torch: the public reference path
def test_rms_norm_non_unit_channel_stride_and_strided_out(backend):
    """A transposed x (channel stride != 1) goes through a copy; a non-contiguous out through a temporary;
    rows sliced from a wider 3-D buffer are read in place with their row stride."""
    dev = backend_device(backend)
    require_backend("rms_norm", backend, dev)
    x = torch.randn(2, 96, 10, device=dev).half().transpose(1, 2)
    w = torch.randn(96, device=dev)
    out = torch.full((2, 96, 10), float("nan"), device=dev, dtype=x.dtype).transpose(1, 2)
    assert lk.rms_norm(x, w, out=out, backend=backend) is out
    assert_close_to_ref(out, *_ref_pair(x, w))
    xs = torch.randn(3, 5, 200, device=dev).bfloat16()[:, 1:4, :160]
    assert_close_to_ref(lk.rms_norm(xs, backend=backend), *_ref_pair(xs, None))


def test_rms_norm_opcheck():
    require_backend("rms_norm", "cpu")
    x = torch.randn(4, 96)
    torch.library.opcheck(torch.ops.liveact.rms_norm_fwd.default, (x, torch.randn(96), 1e-6, torch.empty_like(x)))


def test_rms_norm_compiles_without_graph_break():
    require_backend("rms_norm", "cpu")
    x, w = torch.randn(3, 128), torch.randn(128)
    f = torch.compile(lambda x, w: lk.rms_norm(x, w) * 2, fullgraph=True, backend="inductor")
    torch.testing.assert_close(f(x, w), reference.rms_norm_ref(x, w) * 2, rtol=1e-5, atol=1e-5)


def test_rms_norm_grad_through_reference():
    require_backend("rms_norm", "cpu")
    x = torch.randn(3, 64, requires_grad=True)
    w = torch.randn(64, requires_grad=True)
    lk.rms_norm(x, w, backend="cpu").square().sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    reference.rms_norm_ref(x, w).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


def test_rms_norm_bad_input():
    with pytest.raises(ValueError, match=r"rms_norm: weight must have shape \(64\), got \(32,\)"):
        lk.rms_norm(torch.randn(2, 64), torch.randn(32))
    with pytest.raises(TypeError, match="rms_norm: x must have dtype"):
        lk.rms_norm(torch.ones(2, 4, dtype=torch.int32))
