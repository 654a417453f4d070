"""Minimal reproductions of the two Triton-interpreter bugs that liveact_kernels/triton/interpreter_fixes.py
works around: each test shows the wrong result with the original interpreter functions and the right one with
the fix, on the primitive alone (a cast, a dot), checked against torch."""
import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
pytestmark = [pytest.mark.triton,
              pytest.mark.skipif(not INTERPRET, reason="reproduces bugs of the Triton CPU interpreter: needs "
                                                       "TRITON_INTERPRET=1")]

if INTERPRET:
    import triton
    import triton.language as tl

    from liveact_kernels.triton import interpreter_fixes as fx

    @triton.jit
    def _cast_fp8(x_ptr, y_ptr, N: tl.constexpr):
        o = tl.arange(0, N)
        tl.store(y_ptr + o, tl.load(x_ptr + o).to(tl.float8e4nv))

    @triton.jit
    def _cast_bf16(x_ptr, y_ptr, N: tl.constexpr):
        o = tl.arange(0, N)
        tl.store(y_ptr + o, tl.load(x_ptr + o).to(tl.bfloat16))

    @triton.jit
    def _dot(a_ptr, b_ptr, c_ptr, N: tl.constexpr):
        r = tl.arange(0, N)
        a = tl.load(a_ptr + r[:, None] * N + r[None, :])
        b = tl.load(b_ptr + r[:, None] * N + r[None, :])
        tl.store(c_ptr + r[:, None] * N + r[None, :], tl.dot(a, b))


@pytest.fixture
def original_interpreter():
    """Runs a test with the interpreter's own functions, then re-applies the fixes."""
    fx.remove()
    try:
        yield
    finally:
        fx.apply()


def _fp8_case():
    # 126.9 and 1.9687 round up across a binade (the carry); 2.5, 3.5 ... are ties; 1e-3 is subnormal in e4m3
    x = torch.tensor([126.9, 1.9687, 2.5, 3.5, -5.5, 0.001, 300.0, -7.0e-3] + [0.0] * 8)
    torch.manual_seed(0)
    x = torch.cat([x, torch.randn(496) * 50])
    want = x.to(torch.float8_e4m3fn)
    y = torch.empty_like(want)
    _cast_fp8[(1,)](x, y, N=512)
    return x, y, want


def test_fp8_cast_bug_reproduced(original_interpreter):
    x, y, want = _fp8_case()
    assert y[0].item() == 64.0 and want[0].item() == 128.0      # the dropped carry: 126.9 -> 64
    assert y[1].item() == 1.0 and want[1].item() == 2.0
    assert (y.view(torch.uint8) != want.view(torch.uint8)).sum() > 2


def test_fp8_cast_fixed():
    x, y, want = _fp8_case()
    assert torch.equal(y.view(torch.uint8), want.view(torch.uint8))


def test_bf16_cast_bug_reproduced(original_interpreter):
    x = torch.randn(256)
    y = torch.empty(256, dtype=torch.bfloat16)
    _cast_bf16[(1,)](x, y, N=256)
    trunc = (x.view(torch.int32) & ~0xFFFF).view(torch.float32).bfloat16()   # round toward zero
    assert torch.equal(y, trunc) and not torch.equal(y, x.bfloat16())


def test_bf16_cast_fixed():
    x = torch.randn(256)
    y = torch.empty(256, dtype=torch.bfloat16)
    _cast_bf16[(1,)](x, y, N=256)
    assert torch.equal(y, x.bfloat16())


def _bf16_dot():
    a, b = torch.randn(32, 32).bfloat16(), torch.randn(32, 32).bfloat16()
    c = torch.empty(32, 32)
    _dot[(1,)](a, b, c, N=32)
    return c, a.double() @ b.double()


def test_bf16_dot_bug_reproduced(original_interpreter):
    c, want = _bf16_dot()
    assert (c.double() - want).abs().max() > 1e6          # integer products of the bit patterns


def test_bf16_dot_fixed():
    c, want = _bf16_dot()
    # exact products, fp32 accumulation of 32 terms: within 32 ulp of the fp64 result
    assert (c.double() - want).abs().max() <= 32 * torch.finfo(torch.float32).eps * want.abs().max()


def test_fp16_and_fp8_dots_need_no_fix(original_interpreter):
    a, b = torch.randn(32, 32).half(), torch.randn(32, 32).half()
    c = torch.empty(32, 32)
    _dot[(1,)](a, b, c, N=32)
    torch.testing.assert_close(c, a.float() @ b.float(), rtol=1e-3, atol=1e-3)
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
    _dot[(1,)](a8, b8, c, N=32)
    torch.testing.assert_close(c, a8.float() @ b8.float(), rtol=1e-3, atol=1e-3)
