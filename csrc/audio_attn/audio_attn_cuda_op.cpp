// at::Tensor entry of the CUDA audio cross-attention kernel, registered for the CUDA dispatch key.
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h, absent from slim toolkits
#include <c10/cuda/CUDAGuard.h>

#include "common/cpu_utils.h"
#include "audio_attn/audio_attn.h"

namespace liveact {
namespace {

void audio_cross_attention_fwd_cuda_op(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                       int64_t frame_len, int64_t frame_offset, bool zero_first_frame,
                                       double sm_scale, at::Tensor& out) {
  TORCH_CHECK(q_in.is_cuda() && k_in.is_cuda() && v_in.is_cuda() && out.is_cuda(),
              "audio_cross_attention_fwd: q, k, v and out must be CUDA tensors");
  TORCH_CHECK(q_in.dim() == 4 && k_in.dim() == 5 && v_in.dim() == 5 && out.sizes() == q_in.sizes(),
              "audio_cross_attention_fwd: q/out [B, T*fl, H, Dh], k/v [B, F_audio, N_a, H, Dh]");
  TORCH_CHECK(k_in.scalar_type() == q_in.scalar_type() && v_in.scalar_type() == q_in.scalar_type() &&
                  out.scalar_type() == q_in.scalar_type(), "audio_cross_attention_fwd: q, k, v, out need one dtype");
  TORCH_CHECK(frame_len > 0 && q_in.size(1) % frame_len == 0, "audio_cross_attention_fwd: frame_len must divide seqlen");
  TORCH_CHECK(k_in.size(2) <= kAudioMaxKeys && q_in.size(3) <= kAudioMaxHeadDim,
              "audio_cross_attention_fwd: the CUDA kernel supports N_a <= ", kAudioMaxKeys, " and head_dim <= ",
              kAudioMaxHeadDim, ", got N_a = ", k_in.size(2), ", head_dim = ", q_in.size(3));
  c10::cuda::CUDAGuard guard(q_in.device());
  auto unit = [](const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); };
  at::Tensor q = unit(q_in), k = unit(k_in), v = unit(v_in);
  at::Tensor o = out.stride(-1) == 1 ? out : at::empty(out.sizes(), out.options());
  AudioAttnParams p{q.const_data_ptr(), k.const_data_ptr(), v.const_data_ptr(), o.data_ptr(),
                    q.stride(0), q.stride(1), q.stride(2),
                    k.stride(0), k.stride(1), k.stride(2), k.stride(3),
                    v.stride(0), v.stride(1), v.stride(2), v.stride(3),
                    o.stride(0), o.stride(1), o.stride(2),
                    q.size(0), q.size(1) / frame_len, frame_len, q.size(2), q.size(3), k.size(2), frame_offset,
                    zero_first_frame, float(sm_scale)};
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = LIVEACT_DISPATCH_FLOAT(q.scalar_type(), "audio_cross_attention_fwd",
                                           [&] { return audio_cross_attention_fwd_cuda<scalar_t>(p, stream); });
  TORCH_CHECK(err == cudaSuccess, "audio_cross_attention_fwd: CUDA launch failed: ", cudaGetErrorString(err));
  if (!o.is_same(out)) out.copy_(o);
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CUDA, m) {
  m.impl("audio_cross_attention_fwd", &audio_cross_attention_fwd_cuda_op);
}

}  // namespace liveact
