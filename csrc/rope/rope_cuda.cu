// Launcher of the rope3d CUDA kernel: 16-byte vectors when x's strides and pointer allow, channel pairs otherwise.
// Projection (not measured): rope3d of q or k at [1, 14*1170, 40, 128] bf16 reads and writes 2 x 168 MB
// (the fp32 tables stay in L2); at 3.35 TB/s that is ~100 us.
#include "rope/rope_kernel.cuh"

namespace liveact {

template <typename T, int kVec>
static cudaError_t launch_rope(const Rope3dParams& p, cudaStream_t stream) {
  const int64_t total = p.B * p.N * p.H * (p.Dh / kVec);
  constexpr int kThreads = 256;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const unsigned grid = unsigned(blocks < 65535 * 32 ? blocks : 65535 * 32);
  rope3d_fwd_kernel<T, kVec><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rope3d_fwd_cuda(const Rope3dParams& p, cudaStream_t stream) {
  if (p.B * p.N * p.H * p.Dh == 0) return cudaSuccess;
  constexpr int kVec = 16 / sizeof(T) < 2 ? 2 : 16 / sizeof(T);
  const bool vec_ok = p.Dh % kVec == 0 && p.sxB % kVec == 0 && p.sxN % kVec == 0 && p.sxH % kVec == 0 &&
                      reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  return vec_ok ? launch_rope<T, kVec>(p, stream) : launch_rope<T, 2>(p, stream);
}

template cudaError_t rope3d_fwd_cuda<float>(const Rope3dParams&, cudaStream_t);
template cudaError_t rope3d_fwd_cuda<bf16_t>(const Rope3dParams&, cudaStream_t);
template cudaError_t rope3d_fwd_cuda<fp16_t>(const Rope3dParams&, cudaStream_t);

}  // namespace liveact
