// Params and launcher declarations of the ConvKV family's CUDA kernels. No torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "convkv/convkv_math.h"

namespace liveact {

struct ConvKVCompressParams {
  const void* x;          // (B, group*M, H, Dh), strides below in elements, unit channel stride
  const float* wt;        // (group, H*Dh): the weight transposed so that a tap's channels are contiguous
  void* out;              // (B, M, H, Dh) contiguous
  int64_t B, M, H, Dh;
  int64_t sxB, sxN, sxH;
  int32_t group;
  bool frame_mode;
  int64_t frame_len;
};

// One cache (K or V) of the in-place update; the kernel runs both in one launch.
struct ConvKVCacheTensors {
  void* cache;            // (B, S*fl, H, Dh) contiguous, bf16/fp16/fp32 or float8_e4m3fn
  float* scale;           // (B, S*fl, H, 1) contiguous fp32 for an FP8 cache, else nullptr
  const void* src;        // new block (B, n_new*fl, H, Dh) contiguous, bf16/fp16/fp32
  const float* wt;        // (group, H*Dh) transposed weight
};

struct ConvKVCacheParams {
  ConvKVCacheTensors kv[2];
  int64_t B, H, Dh, frame_len;
  ConvKVSlots slots;
  bool frame_mode;
  int32_t block;          // 0: write new at slot 0; 1: write new at new_dst(); >= 2: compress, shift, write
};

template <typename T>
cudaError_t convkv_compress_fwd_cuda(const ConvKVCompressParams& p, cudaStream_t stream);

// TC: cache storage type (float/bf16_t/fp16_t with TN == TC, or fp8e4m3_t); TN: new block's type.
template <typename TC, typename TN>
cudaError_t convkv_cache_update_fwd_cuda(const ConvKVCacheParams& p, cudaStream_t stream);

}  // namespace liveact
