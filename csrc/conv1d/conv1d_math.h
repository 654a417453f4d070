// Per-element math of the causal depthwise conv1d family (activation, tap), shared by the C++ CPU
// kernels and any CUDA kernel of the family. No torch headers.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "common/macros.h"

namespace liveact {

LIVEACT_HD float dwconv_tap(float acc, float w, float x) { return acc + w * x; }

#if !LIVEACT_ON_DEVICE
// exp(x) for the CPU kernels without a libm call, so that `#pragma omp simd` loops vectorise (glibc's vector expf
// needs -ffast-math): Cody-Waite reduction x = n·ln2 + r, |r| <= ln2/2 (n rounded to nearest), a degree-6 polynomial for e^r (the
// Cephes expf coefficients, about 1 ulp), and 2^n built in the exponent bits. NaN propagates; the input is clamped
// to [-87.3, 88.7], so the result is never a denormal or inf (silu and softmax-style uses only need that range).
inline float dwconv_expf(float x) {
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
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return nan ? x : y * scale;
}

#endif

// silu(x) = x * sigmoid(x); `silu` selects it (causal-conv1d's "silu"/"swish"). On the CPU with dwconv_expf, so
// that the kernels' row loops vectorise (measured: the libm expf made the SiLU pass 6x the cost of the convolution).
LIVEACT_HD float dwconv_activation(float v, bool silu) {
#if LIVEACT_ON_DEVICE
  return silu ? v / (1.0f + __expf(-v)) : v;
#else
  return silu ? v / (1.0f + dwconv_expf(-v)) : v;
#endif
}

}  // namespace liveact
