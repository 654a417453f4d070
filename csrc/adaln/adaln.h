// Params and launcher declarations of the adaLN family's CUDA kernels. No torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace liveact {

// One fused row op over x (batch, seqlen, dim):
//   [x_out = round(x + y * gate)]; out = modulate(norm(x or x_out), shift, scale) (or just norm(.) * w for rms_norm).
// x/y rows are read in place: row (b, l) starts at x + b * x_sb + l * x_sl (elements), channel stride 1.
// gate/shift/scale: contiguous fp32 (batch, frames, dim), frame of token l = l / (seqlen / frames).
// weight/bias: fp32 (dim,) or nullptr. x_out/out: contiguous (batch, seqlen, dim).
struct AdalnParams {
  const void* x;
  const void* y;
  int64_t x_sb, x_sl, y_sb, y_sl;
  const float* gate;
  const float* shift;
  const float* scale;
  const float* weight;
  const float* bias;
  void* x_out;
  void* out;
  int64_t B, L, D, frames;
  float eps;
  bool rms;
};

// adaln_residual (x_out and out), adaln_modulate (out), rms_norm (out = x * rstd * weight; B = 1, L = rows).
template <typename T>
cudaError_t adaln_residual_fwd_cuda(const AdalnParams& p, cudaStream_t stream);
template <typename T>
cudaError_t adaln_modulate_fwd_cuda(const AdalnParams& p, cudaStream_t stream);
template <typename T>
cudaError_t rms_norm_fwd_cuda(const AdalnParams& p, cudaStream_t stream);
// gated_residual: out = round(x + y * gate) (uses x, y, gate, out and the shape fields).
template <typename T>
cudaError_t gated_residual_fwd_cuda(const AdalnParams& p, cudaStream_t stream);

}  // namespace liveact
