// Per-row math of the attention family (online-softmax update, LSE, FP8 K/V dequantisation), shared by the
// C++ CPU kernels and the CUDA kernels so that the CPU tests exercise it. No torch headers.
#pragma once
#include <cstdint>
#include "common/macros.h"
#include "common/numeric.h"

namespace liveact {

constexpr float kNegInf = -__builtin_huge_valf();

LIVEACT_HD float attn_exp(float x) {
#if LIVEACT_ON_DEVICE
  return __expf(x);
#else
  return __builtin_expf(x);
#endif
}

LIVEACT_HD float attn_log(float x) {
#if LIVEACT_ON_DEVICE
  return __logf(x);
#else
  return __builtin_logf(x);
#endif
}

// Running state of one query row: max of the scaled logits seen so far and the sum of exp(s - m).
struct SoftmaxRow {
  float m, l;
};

LIVEACT_HD SoftmaxRow softmax_init() { return SoftmaxRow{kNegInf, 0.f}; }

// The value subtracted before exp: a row whose keys were all masked has m = -inf; subtracting 0 instead keeps
// exp(-inf - 0) = 0 rather than exp(-inf + inf) = NaN.
LIVEACT_HD float softmax_shift(float m) { return m == kNegInf ? 0.f : m; }

// Merges the max of a new key tile into the row state. Returns alpha, the factor by which the accumulated
// output and l must be rescaled (exp(m_old - m_new); 0 when nothing was accumulated yet).
LIVEACT_HD float softmax_update_max(SoftmaxRow& r, float tile_max) {
  float m_new = tile_max > r.m ? tile_max : r.m;
  float alpha = r.m == kNegInf ? 0.f : attn_exp(r.m - m_new);
  r.m = m_new;
  r.l *= alpha;
  return alpha;
}

// Adds the tile's sum of exp(s - m) (computed with the updated m) to the row state.
LIVEACT_HD void softmax_add_sum(SoftmaxRow& r, float tile_sum) { r.l += tile_sum; }

// 1 / l for the final normalisation; rows that saw no key produce output 0 (as the reference does).
LIVEACT_HD float softmax_inv_sum(const SoftmaxRow& r) { return r.l > 0.f ? 1.f / r.l : 0.f; }

// Natural-log LSE of the row's scaled logits; -inf for a row with no key.
LIVEACT_HD float softmax_lse(const SoftmaxRow& r) { return r.l > 0.f ? r.m + attn_log(r.l) : kNegInf; }

// Bottom-right causal alignment: query i (of n_q) sees keys j <= i + n_k - n_q. Returns the last visible key
// index (may be negative: the row sees nothing).
LIVEACT_HD int64_t causal_last_key(int64_t i, int64_t n_q, int64_t n_k) { return i + n_k - n_q; }

// ---- FP8 e4m3 K/V with one fp32 scale per (token, head) ----
// Value of one element: fp8 * scale (fp32, as the fp32 reference dequantises).
LIVEACT_HD float fp8_kv_dequant(uint8_t bits, float scale) { return fp8e4m3_to_float(bits) * scale; }

// The kernels never multiply each element by its scale: every fp8 value is exactly representable in bf16 and
// fp16, so a K tile is converted exactly and the per-key scale is applied to the column of logits
// (s_ij = (q_i . k_j) * k_scale_j), and the V scale to the column of probabilities (p_ij * v_scale_j).
// The fast conversion reinterprets the 7 magnitude bits shifted left by 7 as an fp16, which equals
// fp8 * 2^-8 exactly (the exponent biases differ by 8, subnormals included); kFp8ShiftScale undoes it.
constexpr float kFp8ShiftScale = 256.0f;
LIVEACT_HD uint16_t fp8_to_fp16_shifted_bits(uint8_t b) {
  return uint16_t((uint16_t(b & 0x80u) << 8) | (uint16_t(b & 0x7fu) << 7));
}
// Column factor for logits of an fp8 key: sm_scale * k_scale (the 2^8 of the shifted conversion included).
LIVEACT_HD float fp8_logit_scale(float sm_scale, float k_scale, float conv) { return sm_scale * k_scale * conv; }

}  // namespace liveact
