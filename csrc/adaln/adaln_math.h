// Per-element math of the adaLN family (norm statistics, modulation, gated residual), shared by the
// C++ CPU kernels and the CUDA kernels so that the CPU tests exercise it. No torch headers.
#pragma once
#include "common/macros.h"

namespace liveact {

// Running (mean, M2) statistics merged with Chan's formula: numerically stable for long rows.
struct MeanM2 {
  float n, mean, m2;
};

LIVEACT_HD MeanM2 meanm2_merge(MeanM2 a, MeanM2 b) {
  float n = a.n + b.n;
  if (n == 0.f) return a;
  float d = b.mean - a.mean;
  float wb = b.n / n;
  return MeanM2{n, a.mean + d * wb, a.m2 + b.m2 + d * d * a.n * wb};
}

// 1 / sqrt(var + eps) for LayerNorm, 1 / sqrt(mean(x^2) + eps) for RMSNorm.
LIVEACT_HD float norm_rstd(float var_or_ms, float eps) {
#if LIVEACT_ON_DEVICE
  return rsqrtf(var_or_ms + eps);
#else
  return 1.0f / __builtin_sqrtf(var_or_ms + eps);
#endif
}

// (x - mean) * rstd * w + b: the normalised element with the norm's optional affine (w = 1, b = 0 without).
// RMSNorm is the same with mean = 0.
LIVEACT_HD float normalize(float x, float mean, float rstd, float w, float b) { return (x - mean) * rstd * w + b; }

// y = ((x - mean) * rstd * w + b) * (1 + scale) + shift, the modulated norm of one element.
LIVEACT_HD float modulate(float x, float mean, float rstd, float w, float b, float scale, float shift) {
  return normalize(x, mean, rstd, w, b) * (1.0f + scale) + shift;
}

// x + y * gate, the DiT block's gated residual.
LIVEACT_HD float gated_add(float x, float y, float gate) { return x + y * gate; }

}  // namespace liveact
