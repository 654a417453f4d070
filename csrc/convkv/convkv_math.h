// Per-element math of the ConvKV family (which source token a tap reads, the weighted sum, and the
// per-(token, head) FP8 e4m3 quantisation of the cache), shared by the C++ CPU kernels and the CUDA
// kernels so that the CPU tests exercise it. No torch headers.
#pragma once
#include <cstdint>
#include "common/macros.h"
#include "common/numeric.h"

namespace liveact {

// Source token of tap j for output token t, relative to the start of the compressed span.
// token mode: `group` consecutive tokens of the flattened sequence (the official checkpoint's merge);
// frame mode: the same spatial token s of `group` consecutive frames of frame_len tokens.
LIVEACT_HD int64_t convkv_src_token(int64_t t, int32_t j, int32_t group, bool frame_mode, int64_t frame_len) {
  if (!frame_mode) return t * group + j;
  const int64_t k = t / frame_len, s = t - k * frame_len;
  return (k * group + j) * frame_len + s;
}

// One tap of the depthwise weighted sum, accumulated in fp32.
LIVEACT_HD float convkv_tap(float acc, float w, float x) { return acc + w * x; }

// |x| for finite x, 0 for NaN and +-inf: the amax of an FP8 group ignores non-finite values.
LIVEACT_HD float fp8_abs_finite(float x) {
  const uint32_t u = float_as_u32(x) & 0x7fffffffu;
  return u < 0x7f800000u ? u32_as_float(u) : 0.0f;
}

// scale = amax / 448, never below 1e-12 (an all-zero row keeps a usable scale).
LIVEACT_HD float fp8_scale_from_amax(float amax) {
  const float s = amax / kFp8E4M3Max;
  return s < 1e-12f ? 1e-12f : s;
}

// q = RNE(x / scale) saturated to +-448 (NaN stays NaN); a division, not a reciprocal multiply, so that the
// result is bit-identical to PyTorch's x / scale.
LIVEACT_HD uint8_t fp8_quantize(float x, float scale) { return float_to_fp8e4m3(x / scale); }
LIVEACT_HD float fp8_dequantize(uint8_t q, float scale) { return fp8e4m3_to_float(q) * scale; }

// Slot plan of the ConvKV cache update (reference-model.md section 4.2), in frame slots of frame_len tokens:
// [sinks | compressed | recent | new (compressed * (group - 1) frames)]. For block >= 2, compressed slot c
// (slot sinks + c) <- Phi(slots sinks + c*group ... + group - 1); recent slot r <- slot sinks + compressed*group + r;
// the new block goes to the last slots.
struct ConvKVSlots {
  int32_t sinks, compressed, recent, group;
  LIVEACT_HD int32_t new_frames() const { return compressed * (group - 1); }
  LIVEACT_HD int32_t total() const { return sinks + compressed + recent + new_frames(); }
  LIVEACT_HD int32_t compressed_dst(int32_t c) const { return sinks + c; }
  LIVEACT_HD int32_t compressed_src(int32_t c) const { return sinks + c * group; }
  LIVEACT_HD int32_t recent_dst(int32_t r) const { return sinks + compressed + r; }
  LIVEACT_HD int32_t recent_src(int32_t r) const { return sinks + compressed * group + r; }
  LIVEACT_HD int32_t new_dst() const { return sinks + compressed + recent; }
};

}  // namespace liveact
