// CUDA kernels of the adaLN family: one row per CTA, fp32 math through adaln_math.h. No torch headers.
#pragma once
#include "adaln/adaln.h"
#include "adaln/adaln_math.h"
#include "common/numeric.h"

namespace liveact {

template <int kThreads>
__device__ __forceinline__ float block_sum(float v, float* smem) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? smem[lane] : 0.f;
  if (warp == 0) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) smem[0] = v;
  }
  __syncthreads();
  float r = smem[0];
  __syncthreads();
  return r;
}

template <typename T, int kThreads>
__global__ void __launch_bounds__(kThreads) rms_norm_fwd_kernel(RmsNormParams p) {
  __shared__ float smem[32];
  const int64_t row = blockIdx.x;
  const T* x = reinterpret_cast<const T*>(p.x) + row * p.x_row_stride;
  T* y = reinterpret_cast<T*>(p.out) + row * p.dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    float v = to_float(x[i]);
    ss += v * v;
  }
  const float rstd = norm_rstd(block_sum<kThreads>(ss, smem) / float(p.dim), p.eps);
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    float w = p.weight ? p.weight[i] : 1.f;
    y[i] = from_float<T>(to_float(x[i]) * rstd * w);
  }
}

}  // namespace liveact
