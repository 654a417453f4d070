// Per-element math of the FP8 family (finite amax, scale, quantise, dequantise), shared by the C++ CPU
// kernels and the CUDA kernels so that the CPU tests exercise it. No torch headers.
#pragma once
#include "common/macros.h"
#include "common/numeric.h"

namespace liveact {

// The smallest scale: an all-zero (or all-non-finite) group gets this instead of 0, so q = x / scale and
// q * scale never divide by zero. Equal to torch.tensor(1e-12, dtype=torch.float32).
constexpr float kFp8MinScale = 1e-12f;

// |x| if finite, else 0: amax ignores NaN and +-inf (a single inf would otherwise zero the whole group).
LIVEACT_HD float fp8_finite_abs(float x) {
  const float a = u32_as_float(float_as_u32(x) & 0x7fffffffu);
  return a <= 3.40282346638528859812e+38f ? a : 0.0f;  // false for NaN and inf
}

LIVEACT_HD float fp8_max(float a, float b) { return a > b ? a : b; }

// scale = max(amax / 448, 1e-12), fp32, the same two roundings as the reference (a true division).
LIVEACT_HD float fp8_scale_from_amax(float amax) {
  const float s = amax / kFp8E4M3Max;
  return s > kFp8MinScale ? s : kFp8MinScale;
}

// q = RNE(x / scale) saturated to +-448 (a true IEEE division, as in the reference, so results are
// bit-identical); NaN stays NaN, +-inf give +-448.
LIVEACT_HD uint8_t fp8_quantize(float x, float scale) { return float_to_fp8e4m3(x / scale); }

LIVEACT_HD float fp8_dequantize(uint8_t q, float scale) { return fp8e4m3_to_float(q) * scale; }

// bf16 bits of an e4m3 value: exact (e4m3 has 3 mantissa bits, bf16 has 7), NaN stays NaN.
LIVEACT_HD uint16_t fp8e4m3_to_bf16_bits(uint8_t q) { return uint16_t(float_as_u32(fp8e4m3_to_float(q)) >> 16); }

}  // namespace liveact
