// Params and launcher declaration of the CUDA audio cross-attention kernel. No torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace liveact {

// Each query frame t (frame_len rows) attends to the n_a tokens of audio frame frame_offset + t.
// Strides are in elements; the head dim has unit stride everywhere.
struct AudioAttnParams {
  const void* q;  // (B, T*frame_len, H, Dh)
  const void* k;  // (B, F_audio, n_a, H, Dh)
  const void* v;
  void* out;      // (B, T*frame_len, H, Dh)
  int64_t q_sb, q_st, q_sh;
  int64_t k_sb, k_sf, k_st, k_sh;
  int64_t v_sb, v_sf, v_st, v_sh;
  int64_t o_sb, o_st, o_sh;
  int64_t batch, frames, frame_len, heads, head_dim, n_a, frame_offset;
  bool zero_first_frame;
  float sm_scale;
};

// Limits of the kernel: one key per lane, head_dim spread over the 32 lanes in registers.
constexpr int kAudioMaxKeys = 32;
constexpr int kAudioMaxHeadDim = 128;

template <typename T>
cudaError_t audio_cross_attention_fwd_cuda(const AudioAttnParams& p, cudaStream_t stream);

}  // namespace liveact
