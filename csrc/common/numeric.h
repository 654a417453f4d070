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

// ---- bf16 ----
LIVEACT_HD float bf16_to_float(uint16_t b) { return u32_as_float(uint32_t(b) << 16); }
LIVEACT_HD uint16_t float_to_bf16(float f) {
  uint32_t u = float_as_u32(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // quiet NaN, keep sign
  u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
  return uint16_t(u >> 16);
}

// ---- fp16 (IEEE binary16) ----
LIVEACT_HD float fp16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return u32_as_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return u32_as_float(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return u32_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}
LIVEACT_HD uint16_t float_to_fp16(float f) {
  uint32_t u = float_as_u32(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);            // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);           // rounds to >= 65520 -> inf
  if (a < 0x38800000u) {                                            // below min normal 2^-14: grid 2^-24
    float x = u32_as_float(a) * 16777216.0f;                        // exact scaling by a power of two
    uint32_t q = uint32_t(x);
    float rem = x - float(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1u))) q++;
    return uint16_t(sign | q);                                      // q == 1024 encodes the min normal
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);        // rebias + round to nearest even
  return uint16_t(sign | (r >> 13));
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
  uint32_t bits = (mag >= 8u) ? normal : sub;
  bits = (mag == 0x7fu) ? 0x7fc00000u : bits;                            // NaN
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
  r = r < 0x7eu ? r : 0x7eu;
  // Subnormal range (|f| < 2^-6, grid 2^-9): adding 2^14 (whose ulp is 2^-9) makes the fp32 adder round
  // to the grid (RNE); the low mantissa bits are then the count of 2^-9 steps (0..8; 8 encodes 2^-6).
  const uint32_t s = float_as_u32(u32_as_float(a) + 16384.0f) - 0x46800000u;
  uint32_t out = a < 0x3c800000u ? s : r;
  out = a > 0x7f800000u ? 0x7fu : out;                              // NaN
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
