// Launcher of the CUDA audio cross-attention kernel (grid choice, explicit instantiations).
// Projection (not measured): LiveAct's chunk, q [1, 9360, 40, 128] bf16 against 8 frames x 32 audio tokens,
// moves 95.8 MB (q) + 95.8 MB (out) + 5.2 MB (K/V) = 196.8 MB; at 3.35 TB/s (H100 SXM) that is 59 us.
#include "audio_attn/audio_attn_kernel.cuh"

namespace liveact {

template <typename T>
cudaError_t audio_cross_attention_fwd_cuda(const AudioAttnParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.frames == 0 || p.frame_len == 0 || p.heads == 0) return cudaSuccess;
  if (p.n_a > kAudioMaxKeys || p.head_dim > kAudioMaxHeadDim) return cudaErrorInvalidValue;
  dim3 grid(unsigned((p.frame_len + kAudioRowsPerCta - 1) / kAudioRowsPerCta), unsigned(p.frames * p.heads),
            unsigned(p.batch));
  audio_cross_attention_kernel<T><<<grid, kAudioWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t audio_cross_attention_fwd_cuda<float>(const AudioAttnParams&, cudaStream_t);
template cudaError_t audio_cross_attention_fwd_cuda<bf16_t>(const AudioAttnParams&, cudaStream_t);
template cudaError_t audio_cross_attention_fwd_cuda<fp16_t>(const AudioAttnParams&, cudaStream_t);

}  // namespace liveact
