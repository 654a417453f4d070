// Per-element math of the causal depthwise conv1d family (activation, tap), shared by the C++ CPU
// kernels and any CUDA kernel of the family. No torch headers.
#pragma once
#include <cmath>
#include "common/macros.h"

namespace liveact {

LIVEACT_HD float dwconv_tap(float acc, float w, float x) { return acc + w * x; }

// silu(x) = x * sigmoid(x); `silu` selects it (causal-conv1d's "silu"/"swish").
LIVEACT_HD float dwconv_activation(float v, bool silu) {
#if LIVEACT_ON_DEVICE
  return silu ? v / (1.0f + __expf(-v)) : v;
#else
  return silu ? v / (1.0f + std::exp(-v)) : v;
#endif
}

}  // namespace liveact
