// Launchers of the adaLN family's CUDA kernels (config choice, explicit instantiations).
// Projection (not measured; bytes / 3.35 TB/s H100 HBM3) at LiveAct's shape x [1, 9360, 5120] bf16 (95.8 MB):
//   adaln_residual  reads x, y, writes x_out, out = 383 MB -> 114 us
//   adaln_modulate  reads x, writes out          = 192 MB ->  57 us
//   gated_residual  reads x, y, writes out       = 287 MB ->  86 us
//   rms_norm        reads x, writes out          = 192 MB ->  57 us
// (fp32 modulation rows, [1, frames, 5120], are < 0.5 MB and L2-resident.) Designed for >= 80% of that peak:
// one read and one write of each tensor, 16-byte accesses, no shared-memory staging of the row.
#include "adaln/adaln_kernel.cuh"

namespace liveact {
namespace {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The register-resident vector path needs 16-byte aligned rows of whole vectors.
template <typename T>
bool can_vectorize(const AdalnParams& p, bool res, bool mod) {
  constexpr int64_t N = 16 / sizeof(T);
  if (sizeof(T) != 2 || p.D % N != 0) return false;
  bool ok = aligned16(p.x) && p.x_sb % N == 0 && p.x_sl % N == 0 && aligned16(p.out);
  if (res) ok = ok && aligned16(p.y) && p.y_sb % N == 0 && p.y_sl % N == 0 && aligned16(p.x_out) && aligned16(p.gate);
  if (mod) ok = ok && aligned16(p.shift) && aligned16(p.scale);
  if (p.weight) ok = ok && aligned16(p.weight);
  if (p.bias) ok = ok && aligned16(p.bias);
  return ok;
}

template <typename T, bool kRes, bool kMod>
cudaError_t launch_rows(const AdalnParams& p, cudaStream_t stream) {
  const int64_t rows = p.B * p.L;
  if (rows == 0 || p.D == 0) return cudaSuccess;
  const dim3 grid{unsigned(rows)};
  if (can_vectorize<T>(p, kRes, kMod)) {
    const int64_t nvec = p.D / (16 / int64_t(sizeof(T)));
    // Vectors per thread chosen so that few threads idle: D = 3072 -> 3, 5120 -> 5, 8192 -> 8 (bf16).
    if (nvec <= 128) adaln_row_vec_kernel<T, 128, 1, kRes, kMod><<<grid, 128, 0, stream>>>(p);
    else if (nvec <= 256) adaln_row_vec_kernel<T, 128, 2, kRes, kMod><<<grid, 128, 0, stream>>>(p);
    else if (nvec <= 384) adaln_row_vec_kernel<T, 128, 3, kRes, kMod><<<grid, 128, 0, stream>>>(p);
    else if (nvec <= 512) adaln_row_vec_kernel<T, 128, 4, kRes, kMod><<<grid, 128, 0, stream>>>(p);
    else if (nvec <= 640) adaln_row_vec_kernel<T, 128, 5, kRes, kMod><<<grid, 128, 0, stream>>>(p);
    else if (nvec <= 1024) adaln_row_vec_kernel<T, 128, 8, kRes, kMod><<<grid, 128, 0, stream>>>(p);
    else if (nvec <= 2048) adaln_row_vec_kernel<T, 256, 8, kRes, kMod><<<grid, 256, 0, stream>>>(p);
    else adaln_row_generic_kernel<T, 256, kRes, kMod><<<grid, 256, 0, stream>>>(p);
  } else {
    adaln_row_generic_kernel<T, 256, kRes, kMod><<<grid, 256, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t adaln_residual_fwd_cuda(const AdalnParams& p, cudaStream_t stream) {
  return launch_rows<T, true, true>(p, stream);
}
template <typename T>
cudaError_t adaln_modulate_fwd_cuda(const AdalnParams& p, cudaStream_t stream) {
  return launch_rows<T, false, true>(p, stream);
}
template <typename T>
cudaError_t rms_norm_fwd_cuda(const AdalnParams& p, cudaStream_t stream) {
  return launch_rows<T, false, false>(p, stream);
}

template <typename T>
cudaError_t gated_residual_fwd_cuda(const AdalnParams& p, cudaStream_t stream) {
  const int64_t rows = p.B * p.L;
  if (rows == 0 || p.D == 0) return cudaSuccess;
  constexpr int64_t N = 16 / sizeof(T);
  const bool vec = sizeof(T) == 2 && p.D % N == 0 && aligned16(p.x) && aligned16(p.y) && aligned16(p.out) &&
                   aligned16(p.gate) && p.x_sb % N == 0 && p.x_sl % N == 0 && p.y_sb % N == 0 && p.y_sl % N == 0;
  const int64_t items = rows * (vec ? p.D / N : p.D);
  const unsigned blocks = unsigned(std::min<int64_t>((items + 255) / 256, int64_t(1) << 20));  // grid-stride beyond
  if (vec) gated_residual_kernel<T, true><<<blocks, 256, 0, stream>>>(p);
  else gated_residual_kernel<T, false><<<blocks, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

#define LIVEACT_ADALN_INSTANTIATE(T)                                                   \
  template cudaError_t adaln_residual_fwd_cuda<T>(const AdalnParams&, cudaStream_t);  \
  template cudaError_t adaln_modulate_fwd_cuda<T>(const AdalnParams&, cudaStream_t);  \
  template cudaError_t rms_norm_fwd_cuda<T>(const AdalnParams&, cudaStream_t);        \
  template cudaError_t gated_residual_fwd_cuda<T>(const AdalnParams&, cudaStream_t);
LIVEACT_ADALN_INSTANTIATE(float)
LIVEACT_ADALN_INSTANTIATE(bf16_t)
LIVEACT_ADALN_INSTANTIATE(fp16_t)
#undef LIVEACT_ADALN_INSTANTIATE

}  // namespace liveact
