// Launchers of the ConvKV family's CUDA kernels (grid choice, vector width, explicit instantiations).
// Projections (not measured), H100 at 3.35 TB/s:
// - convkv_compress of [1, 5*1170, 40, 128] bf16: reads 59.9 MB, writes 12.0 MB -> ~21 us.
// - convkv_cache_update (one layer and step, fl = 1170, H*Dh = 5120, K and V): per cache it reads 12 slots
//   (2..13) and the 8-frame new block and writes 12 slots. FP8 cache: (12 x 6.0 + 8 x 12.0 + 12 x 6.0) MB x 2
//   = 480 MB -> ~143 us; bf16 cache: (12 x 12 + 8 x 12 + 12 x 12) MB x 2 = 768 MB -> ~229 us. The grid has only
//   B * H * 2 = 80 CTAs for B = 1: whether 80 SMs saturate HBM is unmeasured.
#include "convkv/convkv_kernel.cuh"

namespace liveact {

template <typename T, int kVec>
static cudaError_t launch_compress(const ConvKVCompressParams& p, cudaStream_t stream) {
  const int64_t total = p.B * p.M * p.H * (p.Dh / kVec);
  constexpr int kThreads = 256;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const unsigned grid = unsigned(blocks < 65535 * 32 ? blocks : 65535 * 32);
  convkv_compress_fwd_kernel<T, kVec><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t convkv_compress_fwd_cuda(const ConvKVCompressParams& p, cudaStream_t stream) {
  if (p.B * p.M * p.H * p.Dh == 0) return cudaSuccess;
  constexpr int kVec = int(16 / sizeof(T));
  const bool vec_ok = p.Dh % kVec == 0 && p.sxB % kVec == 0 && p.sxN % kVec == 0 && p.sxH % kVec == 0 &&
                      reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  return vec_ok ? launch_compress<T, kVec>(p, stream) : launch_compress<T, 1>(p, stream);
}

template <typename TC, typename TN>
cudaError_t convkv_cache_update_fwd_cuda(const ConvKVCacheParams& p, cudaStream_t stream) {
  if (p.B * p.H == 0 || p.frame_len == 0) return cudaSuccess;
  const size_t smem = p.block >= 2 ? size_t(p.slots.group) * size_t(p.Dh) * sizeof(float) : 0;
  if (smem > 48 * 1024) return cudaErrorInvalidValue;
  convkv_cache_update_kernel<TC, TN><<<dim3(unsigned(p.B * p.H), 2), kCacheThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t convkv_compress_fwd_cuda<float>(const ConvKVCompressParams&, cudaStream_t);
template cudaError_t convkv_compress_fwd_cuda<bf16_t>(const ConvKVCompressParams&, cudaStream_t);
template cudaError_t convkv_compress_fwd_cuda<fp16_t>(const ConvKVCompressParams&, cudaStream_t);
template cudaError_t convkv_cache_update_fwd_cuda<float, float>(const ConvKVCacheParams&, cudaStream_t);
template cudaError_t convkv_cache_update_fwd_cuda<bf16_t, bf16_t>(const ConvKVCacheParams&, cudaStream_t);
template cudaError_t convkv_cache_update_fwd_cuda<fp16_t, fp16_t>(const ConvKVCacheParams&, cudaStream_t);
template cudaError_t convkv_cache_update_fwd_cuda<fp8e4m3_t, float>(const ConvKVCacheParams&, cudaStream_t);
template cudaError_t convkv_cache_update_fwd_cuda<fp8e4m3_t, bf16_t>(const ConvKVCacheParams&, cudaStream_t);
template cudaError_t convkv_cache_update_fwd_cuda<fp8e4m3_t, fp16_t>(const ConvKVCacheParams&, cudaStream_t);

}  // namespace liveact
