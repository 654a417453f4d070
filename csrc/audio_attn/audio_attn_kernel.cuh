// CUDA audio cross-attention: one CTA per (128 query rows, frame, head, batch); the frame's K (transposed) and
// V sit in shared memory as fp32, each warp streams query rows: lane j scores key j, the softmax is a warp
// reduction (attention_math.h), and lane d accumulates output channels d, d+32, ... No torch headers.
#pragma once
#include "audio_attn/audio_attn.h"
#include "attention/attention_math.h"
#include "common/numeric.h"

namespace liveact {

constexpr int kAudioWarps = 8;
constexpr int kAudioRowsPerCta = 128;

LIVEACT_DEVICE float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
LIVEACT_DEVICE float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kAudioWarps * 32) audio_cross_attention_kernel(AudioAttnParams p) {
  __shared__ float sKt[kAudioMaxHeadDim * kAudioMaxKeys];  // [d][key]: lane = key reads are conflict-free
  __shared__ float sV[kAudioMaxKeys * kAudioMaxHeadDim];   // [key][d]
  __shared__ float sQ[kAudioWarps][kAudioMaxHeadDim];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.z, t = blockIdx.y / p.heads, h = blockIdx.y % p.heads;
  const int64_t row0 = int64_t(blockIdx.x) * kAudioRowsPerCta;
  const int64_t row1 = row0 + kAudioRowsPerCta < p.frame_len ? row0 + kAudioRowsPerCta : p.frame_len;
  const int Dh = int(p.head_dim), Na = int(p.n_a);
  T* out = reinterpret_cast<T*>(p.out) + b * p.o_sb + h * p.o_sh;

  if (p.zero_first_frame && t == 0) {  // the reference frame of block 0 gets no audio
    for (int64_t r = row0 + warp; r < row1; r += kAudioWarps)
      for (int d = lane; d < Dh; d += 32) out[r * p.o_st + d] = from_float<T>(0.f);
    return;
  }
  const int64_t fa = p.frame_offset + t;
  const T* k = reinterpret_cast<const T*>(p.k) + b * p.k_sb + fa * p.k_sf + h * p.k_sh;
  const T* v = reinterpret_cast<const T*>(p.v) + b * p.v_sb + fa * p.v_sf + h * p.v_sh;
  for (int i = threadIdx.x; i < Na * Dh; i += kAudioWarps * 32) {
    const int j = i / Dh, d = i % Dh;
    sKt[d * kAudioMaxKeys + j] = to_float(k[j * p.k_st + d]);
    sV[j * kAudioMaxHeadDim + d] = to_float(v[j * p.v_st + d]);
  }
  __syncthreads();

  const T* q = reinterpret_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const int64_t qrow_base = t * p.frame_len;
  for (int64_t r = row0 + warp; r < row1; r += kAudioWarps) {
    const int64_t tok = qrow_base + r;
    for (int d = lane; d < Dh; d += 32) sQ[warp][d] = to_float(q[tok * p.q_st + d]) * p.sm_scale;
    __syncwarp();
    float s = kNegInf;
    if (lane < Na) {
      s = 0.f;
      for (int d = 0; d < Dh; ++d) s = fmaf(sQ[warp][d], sKt[d * kAudioMaxKeys + lane], s);
    }
    SoftmaxRow st = softmax_init();
    softmax_update_max(st, warp_max(s));
    const float e = lane < Na ? attn_exp(s - softmax_shift(st.m)) : 0.f;
    softmax_add_sum(st, warp_sum(e));
    const float inv = softmax_inv_sum(st);
    float acc[kAudioMaxHeadDim / 32];
#pragma unroll
    for (int c = 0; c < kAudioMaxHeadDim / 32; ++c) acc[c] = 0.f;
    for (int j = 0; j < Na; ++j) {
      const float pj = __shfl_sync(0xffffffffu, e, j);
#pragma unroll
      for (int c = 0; c < kAudioMaxHeadDim / 32; ++c) {
        const int d = lane + 32 * c;
        if (d < Dh) acc[c] = fmaf(pj, sV[j * kAudioMaxHeadDim + d], acc[c]);
      }
    }
#pragma unroll
    for (int c = 0; c < kAudioMaxHeadDim / 32; ++c) {
      const int d = lane + 32 * c;
      if (d < Dh) out[tok * p.o_st + d] = from_float<T>(acc[c] * inv);
    }
    __syncwarp();  // sQ[warp] is rewritten by the next row
  }
}

}  // namespace liveact
