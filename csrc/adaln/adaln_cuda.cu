// Launchers of the adaLN family's CUDA kernels (grid choice, explicit instantiations).
// Projection (not measured): rms_norm at [9360, 5120] bf16 moves 2 x 95.8 MB; at 3.35 TB/s that is 57 us.
#include "adaln/adaln_kernel.cuh"

namespace liveact {

template <typename T>
cudaError_t rms_norm_fwd_cuda(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  rms_norm_fwd_kernel<T, kThreads><<<dim3(unsigned(p.rows)), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t rms_norm_fwd_cuda<float>(const RmsNormParams&, cudaStream_t);
template cudaError_t rms_norm_fwd_cuda<bf16_t>(const RmsNormParams&, cudaStream_t);
template cudaError_t rms_norm_fwd_cuda<fp16_t>(const RmsNormParams&, cudaStream_t);

}  // namespace liveact
