// Per-element math of the causal depthwise conv1d family (activation, tap), shared by the C++ CPU
// kernels and any CUDA kernel of the family. No torch headers.
#pragma once
#include <cmath>
#include "common/macros.h"
#include "common/numeric.h"

namespace liveact {

LIVEACT_HD float dwconv_tap(float acc, float w, float x) { return acc + w * x; }

// silu(x) = x * sigmoid(x); `silu` selects it (causal-conv1d's "silu"/"swish"). On the CPU with cpu_expf
// (numeric.h), so that the kernels' row loops vectorise (measured: the libm expf made the SiLU pass 6x the cost of
// the convolution).
LIVEACT_HD float dwconv_activation(float v, bool silu) {
#if LIVEACT_ON_DEVICE
  return silu ? v / (1.0f + __expf(-v)) : v;
#else
  return silu ? v / (1.0f + cpu_expf(-v)) : v;
#endif
}

}  // namespace liveact
