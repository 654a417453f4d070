// Params and launcher declarations of the FP8 family's CUDA kernels. No torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace liveact {

// x viewed as (groups, group_size) contiguous rows; one fp32 scale per row.
struct Fp8QuantParams {
  const void* x;   // (groups * group_size,) float / bf16 / fp16
  uint8_t* q;      // same count, float8_e4m3fn bits
  float* scale;    // (groups,)
  int64_t groups, group_size;
};

struct Fp8DequantParams {
  const uint8_t* q;    // (n,) float8_e4m3fn bits
  const float* scale;  // (n / group_size,)
  void* out;           // (n,) float / bf16 / fp16
  int64_t n, group_size;
};

template <typename T>
cudaError_t quantize_fp8_fwd_cuda(const Fp8QuantParams& p, cudaStream_t stream);
template <typename T>
cudaError_t dequantize_fp8_fwd_cuda(const Fp8DequantParams& p, cudaStream_t stream);

}  // namespace liveact
