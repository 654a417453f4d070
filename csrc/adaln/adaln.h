// Params and launcher declarations of the adaLN family's CUDA kernels. No torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace liveact {

struct RmsNormParams {
  const void* x;       // (rows, dim), row stride x_row_stride elements, unit channel stride
  const float* weight; // (dim,) or nullptr
  void* out;           // (rows, dim) contiguous
  int64_t rows, dim, x_row_stride;
  float eps;
};

template <typename T>
cudaError_t rms_norm_fwd_cuda(const RmsNormParams& p, cudaStream_t stream);

}  // namespace liveact
