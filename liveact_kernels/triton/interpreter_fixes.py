"""Workarounds for two bugs of Triton 3.8's CPU interpreter (TRITON_INTERPRET=1), applied only under the
interpreter (tests/conftest.py imports this module when TRITON_INTERPRET=1; importing it elsewhere is a no-op).

Bug 1, float downcasts (kernel-notes.md section 9; triton-lang/triton#8322, fix proposed in #11897).
  `triton.runtime.interpreter._convert_float` emulates fp32/fp16/bf16 -> fp8 (and fp32 -> bf16) casts with
  bit arithmetic that (a) drops the carry when rounding overflows the mantissa (126.9 -> fp8e4nv gives 64
  instead of 128; 1.9687 gives 1.0 instead of 2.0), (b) rounds ties away from zero instead of to even, and
  (c) for fp32 -> bf16 (`create_fp_trunc`, which passes no rounding mode) truncates instead of rounding to
  nearest even. Fix: for float -> float conversions between dtypes torch has, convert with torch's own casts
  (round to nearest even, as the GPU's `cvt.rn` / `cvt.rn.satfinite` do). Anything else goes to the original.

Bug 2, `tl.dot` on bf16 operands. The interpreter stores bf16 tensors as uint16 bit patterns and calls
  `np.matmul` on them, which multiplies the integers (errors ~1e10 on a 32x32 product). Fix: wrap
  `InterpreterBuilder.create_dot` so that bf16 operands are first widened to fp32 (exact: every bf16 value is
  an fp32 value) and the product is accumulated in fp32, which is what tensor cores do for bf16 x bf16 -> fp32.

Why these cannot hide a kernel bug:
  * Neither fix changes what a kernel computes, only how the interpreter emulates two primitive operations,
    and each now matches the definition the GPU implements (IEEE round-to-nearest-even casts; exact products
    with fp32 accumulation). `tests/test_triton_interpreter_bugs.py` checks both against torch on the
    primitive alone, without and with the fix, so a wrong emulation would fail there, not pass silently.
  * The kernels contain no interpreter-specific code path: the same source is compiled for sm_80/89/90 by
    tests/test_triton_compile.py. A kernel that relied on the patched behaviour would rely on IEEE casts and
    exact bf16 products, which the hardware provides.
  * The fixes only make the emulation more exact; a kernel bug (wrong index, mask, scale, softmax update)
    changes results by far more than one rounding step and is still caught by the reference comparisons.
  * Kernels saturate to +-448 before any fp8 cast, so overflow behaviour never depends on the cast emulation.
"""
from __future__ import annotations

import os

import numpy as np

APPLIED = False
_ORIG = {}


def _torch_dtype(tt):
    import torch
    import triton.language as tl
    return {tl.float32: torch.float32, tl.float16: torch.float16, tl.bfloat16: torch.bfloat16,
            tl.float64: torch.float64, tl.float8e4nv: torch.float8_e4m3fn, tl.float8e5: torch.float8_e5m2}.get(tt)


_BITS = {8: (np.uint8, "uint8"), 16: (np.uint16, "int16"), 32: (np.uint32, "int32"), 64: (np.uint64, "int64")}


def convert_float_torch(input, input_dtype, output_dtype, rounding_mode):
    """Drop-in for interpreter._convert_float: takes and returns bit patterns (numpy unsigned ints), converts
    with torch casts (round to nearest even; fp8 e4m3 saturates finite values to +-448 like `cvt.rn.satfinite`).
    Dtypes torch lacks go to the original."""
    import torch
    import triton.language as tl
    ti, to = _torch_dtype(input_dtype), _torch_dtype(output_dtype)
    if ti is None or to is None:
        return _ORIG["convert"](input, input_dtype, output_dtype, rounding_mode)
    a = np.ascontiguousarray(input)
    np_in, t_in = _BITS[input_dtype.primitive_bitwidth]
    x = torch.from_numpy(a.view(np_in).copy()).view(getattr(torch, t_in)).view(ti)
    if output_dtype == tl.float8e4nv:
        x = x.clamp(-448.0, 448.0)  # torch.clamp keeps NaN
    y = x.to(to)
    np_out, t_out = _BITS[output_dtype.primitive_bitwidth]
    return y.view(getattr(torch, t_out)).numpy().view(np_out).reshape(np.shape(input))


def _dot_bf16_as_fp32(self, a, b, d, input_precision, max_num_imprecise_acc):
    import triton.language as tl
    from triton.runtime import interpreter as it
    if a.dtype.scalar == tl.bfloat16 or b.dtype.scalar == tl.bfloat16:
        def widen(h):
            if h.dtype.scalar != tl.bfloat16:
                return h
            bits = h.data.astype(np.uint32) << 16   # bf16 is the top half of an fp32
            return it.TensorHandle(bits.view(np.float32), tl.float32)
        a, b = widen(a), widen(b)
    return _ORIG["dot"](self, a, b, d, input_precision, max_num_imprecise_acc)


def apply():
    """Installs both fixes (idempotent). Only meaningful under TRITON_INTERPRET=1."""
    global APPLIED
    if APPLIED:
        return
    from triton.runtime import interpreter as it
    _ORIG["convert"] = it._convert_float
    _ORIG["dot"] = it.InterpreterBuilder.create_dot
    it._convert_float = convert_float_torch
    it.InterpreterBuilder.create_dot = _dot_bf16_as_fp32
    APPLIED = True


def remove():
    """Restores the interpreter's original functions (used by the bug-reproduction tests)."""
    global APPLIED
    if not APPLIED:
        return
    from triton.runtime import interpreter as it
    it._convert_float = _ORIG["convert"]
    it.InterpreterBuilder.create_dot = _ORIG["dot"]
    APPLIED = False


if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    apply()
