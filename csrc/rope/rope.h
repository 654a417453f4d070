// Params and launcher declaration of the rope3d CUDA kernel. No torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "rope/rope_math.h"

namespace liveact {

struct Rope3dParams {
  const void* x;                 // (B, N, H, Dh), strides in elements below, unit channel stride
  void* out;                     // (B, N, H, Dh) contiguous
  RopeTables tables;
  int64_t B, N, H, Dh;
  int64_t sxB, sxN, sxH;
  int64_t h, w;                  // grid rows and columns (tokens are frame-major: n = (f*h + r)*w + c)
};

template <typename T>
cudaError_t rope3d_fwd_cuda(const Rope3dParams& p, cudaStream_t stream);

}  // namespace liveact
