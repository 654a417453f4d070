// Storage types and conversions (bf16, fp16, fp8 e4m3) shared by host and device code.
// Bit-exact, round-to-nearest-even; written with integer ops so that the CPU tests exercise the same
// code the CUDA kernels run. No torch headers.
#pragma once
#include <cstdint>
#include <cstring>
#include "macros.h"

namespace liveact {

struct bf16_t { uint16_t bits; };
struct fp16_t { uint16_t bits; };
struct fp8e4m3_t { uint8_t bits; };

// Largest finite float8_e4m3fn value; quantisation saturates here.
constexpr float kFp8E4M3Max = 448.0f;

LIVEACT_HD uint32_t float_as_u32(float f) {
#if LIVEACT_ON_DEVICE
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}
LIVEACT_HD float u32_as_float(uint32_t u) {
#if LIVEACT_ON_DEVICE
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}

#if !LIVEACT_ON_DEVICE
// exp(x) for the CPU kernels without a libm call, so that `#pragma omp simd` loops vectorise (glibc's vector expf
// needs -ffast-math; attention_cpu.cpp keeps its own AVX-512 form for x <= 0): Cody-Waite reduction
// x = n·ln2 + r with n rounded to nearest, a degree-6 polynomial for e^r (the Cephes expf coefficients, about
// 1 ulp), and 2^n built in the exponent bits. NaN propagates. The input is clamped to [-87.3, 88.7]: below, the
// result stays a normal float (never a denormal or 0); above 88.38, 2^n = 2^128 is built as +inf, so exp
// overflows to inf there (libm's overflows at 88.72) and silu(-x) of a huge x is -0, -inf gives NaN, as with libm.
inline float cpu_expf(float x) {
  const bool nan = x != x;
  float xs = nan ? 0.f : (x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x));
  // n = round(x / ln2) by the 1.5·2^23 trick (std::floor does not vectorise without -fno-trapping-math)
  const float n = (xs * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xs - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const float scale = u32_as_float(uint32_t(int32_t(n) + 127) << 23);   // 2^n, n in [-126, 128] (128: +inf)
  return nan ? x : y * scale;
}
#endif

// cond ? a : b written with masks: gcc if-converts plain ?: on integers into branches in some of these
// functions, which stops `#pragma omp simd` loops from vectorising ("control flow in loop").
LIVEACT_HD uint32_t select_u32(bool cond, uint32_t a, uint32_t b) {
  const uint32_t m = 0u - uint32_t(cond);
  return (a & m) | (b & ~m);
}

// ---- bf16 ----
LIVEACT_HD float bf16_to_float(uint16_t b) { return u32_as_float(uint32_t(b) << 16); }
LIVEACT_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = float_as_u32(f);
  const uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;                 // round to nearest even
  return uint16_t(select_u32((u & 0x7fffffffu) > 0x7f800000u, (u >> 16) | 0x40u, rne));  // quiet NaN, keep sign
}

// ---- fp16 (IEEE binary16) ----
LIVEACT_HD float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  const uint32_t normal = ((exp + 112u) << 23) | (man << 13);
  const uint32_t special = 0x7f800000u | (man << 13);                           // inf / NaN
  const uint32_t sub = float_as_u32(float(int(man)) * 5.9604644775390625e-8f);   // man * 2^-24, exact
  uint32_t bits = select_u32(exp == 0x1fu, special, normal);
  bits = select_u32(exp == 0u, sub, bits);
  return u32_as_float(sign | bits);
}
LIVEACT_HD uint16_t float_to_fp16(float f) {
  const uint32_t u = float_as_u32(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // Normal range: rebias 127 -> 15 and round the mantissa to 10 bits (RNE) by an integer add; anything that
  // rounds to >= 65520 (and inf) lands at or above 0x7c00 and is clamped to inf.
  uint32_t r = (a + 0xfffu + ((a >> 13) & 1u) - (112u << 23)) >> 13;
  r = select_u32(r < 0x7c00u, r, 0x7c00u);
  // Below the min normal 2^-14 (grid 2^-24): adding 0.5 (whose ulp is 2^-24) makes the fp32 adder round to
  // the grid (RNE); the low bits count 2^-24 steps (1024 encodes the min normal).
  const uint32_t s = float_as_u32(u32_as_float(a) + 0.5f) - 0x3f000000u;
  uint32_t out = select_u32(a < 0x38800000u, s, r);
  out = select_u32(a > 0x7f800000u, 0x7e00u, out);                  // NaN
  return uint16_t(sign | out);
}

// ---- fp8 e4m3fn (no inf; 0x7f/0xff are NaN; max 448) ----
// Both conversions are branch-free (selects only) so that `#pragma omp simd` loops on the CPU vectorise
// them to AVX-512 and CUDA threads do not diverge; the CPU tests run exactly this code.

// Exact: every e4m3 value is an fp32 (and a bf16) value. Normal: rebias the exponent (7 -> 127) by an
// integer add; subnormal (exponent field 0): man * 2^-9, computed without fp32 denormals.
LIVEACT_HD float fp8e4m3_to_float(uint8_t v) {
  const uint32_t sign = uint32_t(v & 0x80u) << 24;
  const uint32_t mag = v & 0x7fu;
  const uint32_t normal = (mag << 20) + (120u << 23);
  const uint32_t sub = float_as_u32(float(mag & 0x7u) * 0.001953125f);  // man * 2^-9, exact
  uint32_t bits = select_u32(mag >= 8u, normal, sub);
  bits = select_u32(mag == 0x7fu, 0x7fc00000u, bits);                    // NaN
  return u32_as_float(bits | sign);
}

// Round to nearest even with saturation to +-448 (the "satfinite" conversion); NaN stays NaN (sign kept).
// +-inf saturate to +-448 as well: FP8 has no inf, and a scale computed from a finite amax never
// produces inf, so this only triggers on user data that was already inf. For |f| <= 448 this equals
// torch's `.to(torch.float8_e4m3fn)` bit for bit (tests/test_fp8.py checks every bf16 / fp16 pattern and
// random fp32; an exhaustive fp32 sweep is the slow test); torch itself returns NaN for |f| >= 464, which
// is why quantisation clamps (reference) or saturates (here) first.
LIVEACT_HD uint8_t float_to_fp8e4m3(float f) {
  const uint32_t u = float_as_u32(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  // Normal range (|f| >= 2^-6): round the mantissa to 3 bits (RNE) by an integer add, rebias 127 -> 7.
  // Any value that rounds above 448 (including inf) exceeds 0x7e after rebiasing: min() saturates it.
  uint32_t r = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20;
  r = r - (120u << 3);
  r = select_u32(r < 0x7eu, r, 0x7eu);
  // Subnormal range (|f| < 2^-6, grid 2^-9): adding 2^14 (whose ulp is 2^-9) makes the fp32 adder round
  // to the grid (RNE); the low mantissa bits are then the count of 2^-9 steps (0..8; 8 encodes 2^-6).
  const uint32_t s = float_as_u32(u32_as_float(a) + 16384.0f) - 0x46800000u;
  uint32_t out = select_u32(a < 0x3c800000u, s, r);
  out = select_u32(a > 0x7f800000u, 0x7fu, out);                    // NaN
  return uint8_t(sign | out);
}

// ---- generic load/store by storage type ----
LIVEACT_HD float to_float(float x) { return x; }
LIVEACT_HD float to_float(bf16_t x) { return bf16_to_float(x.bits); }
LIVEACT_HD float to_float(fp16_t x) { return fp16_to_float(x.bits); }
LIVEACT_HD float to_float(fp8e4m3_t x) { return fp8e4m3_to_float(x.bits); }

template <typename T> LIVEACT_HD T from_float(float x);
template <> LIVEACT_HD float from_float<float>(float x) { return x; }
template <> LIVEACT_HD bf16_t from_float<bf16_t>(float x) { return bf16_t{float_to_bf16(x)}; }
template <> LIVEACT_HD fp16_t from_float<fp16_t>(float x) { return fp16_t{float_to_fp16(x)}; }
template <> LIVEACT_HD fp8e4m3_t from_float<fp8e4m3_t>(float x) { return fp8e4m3_t{float_to_fp8e4m3(x)}; }

}  // namespace liveact
