// CUDA kernels of the ConvKV family: the compression (one thread per 16-byte vector of an output row) and the
// in-place cache update (one CTA per (batch, head, K|V), phases separated by __syncthreads so that every slot is
// read before it is overwritten). Weighted sum and FP8 quantisation come from convkv_math.h. No torch headers.
#pragma once
#include "convkv/convkv.h"
#include "common/numeric.h"

namespace liveact {

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) ConvKVVec { T v[kVec]; };

template <typename T, int kVec>
__global__ void __launch_bounds__(256) convkv_compress_fwd_kernel(ConvKVCompressParams p) {
  const int64_t chunks = p.Dh / kVec;
  const int64_t total = p.B * p.M * p.H * chunks;
  const int64_t C = p.H * p.Dh;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = idx % chunks;
    const int64_t row = idx / chunks;  // (b * M + t) * H + hh
    const int64_t hh = row % p.H;
    const int64_t bt = row / p.H;
    const int64_t t = bt % p.M, b = bt / p.M;
    float acc[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc[e] = 0.f;
    for (int32_t j = 0; j < p.group; ++j) {
      const int64_t src = convkv_src_token(t, j, p.group, p.frame_mode, p.frame_len);
      const ConvKVVec<T, kVec> xv = *reinterpret_cast<const ConvKVVec<T, kVec>*>(
          reinterpret_cast<const T*>(p.x) + b * p.sxB + src * p.sxN + hh * p.sxH + k * kVec);
      const float* w = p.wt + int64_t(j) * C + hh * p.Dh + k * kVec;
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[e] = convkv_tap(acc[e], __ldg(w + e), to_float(xv.v[e]));
    }
    ConvKVVec<T, kVec> o;
#pragma unroll
    for (int e = 0; e < kVec; ++e) o.v[e] = from_float<T>(acc[e]);
    *reinterpret_cast<ConvKVVec<T, kVec>*>(reinterpret_cast<T*>(p.out) + row * p.Dh + k * kVec) = o;
  }
}

// ---------------------------------------------------------------------------------------- cache update
// Each thread owns 16 consecutive channels of one (token, head) row: 16 B of FP8, 32 B of bf16, 64 B of fp32,
// moved with 16-byte vector accesses. A row of head_dim channels is kLanes = head_dim/16 adjacent lanes; the
// per-(token, head) amax is reduced across them with warp shuffles.
constexpr int kCacheElems = 16;
constexpr int kCacheThreads = 256;

template <typename T>
__device__ __forceinline__ void load16(const T* p, float (&v)[kCacheElems], float scale) {
  constexpr int kWords = kCacheElems * int(sizeof(T)) / 16;
  alignas(16) T e[kCacheElems];
#pragma unroll
  for (int i = 0; i < kWords; ++i) reinterpret_cast<uint4*>(e)[i] = reinterpret_cast<const uint4*>(p)[i];
#pragma unroll
  for (int i = 0; i < kCacheElems; ++i) v[i] = to_float(e[i]);
  (void)scale;
}
template <>
__device__ __forceinline__ void load16<fp8e4m3_t>(const fp8e4m3_t* p, float (&v)[kCacheElems], float scale) {
  alignas(16) fp8e4m3_t e[kCacheElems];
  *reinterpret_cast<uint4*>(e) = *reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < kCacheElems; ++i) v[i] = fp8_dequantize(e[i].bits, scale);
}

template <typename T>
__device__ __forceinline__ void store16(T* p, const float (&v)[kCacheElems]) {
  constexpr int kWords = kCacheElems * int(sizeof(T)) / 16;
  alignas(16) T e[kCacheElems];
#pragma unroll
  for (int i = 0; i < kCacheElems; ++i) e[i] = from_float<T>(v[i]);
#pragma unroll
  for (int i = 0; i < kWords; ++i) reinterpret_cast<uint4*>(p)[i] = reinterpret_cast<const uint4*>(e)[i];
}

// Converts (float caches) or quantises (FP8: amax over the row's lanes by xor-shuffles) one chunk of a row and,
// when `valid`, stores it. Every lane of the warp must call this (the shuffles), valid or not.
template <typename TC>
__device__ __forceinline__ void store_chunk(TC* dst, float* sdst, const float (&v)[kCacheElems], int lanes, int lane,
                                            bool valid) {
  if constexpr (sizeof(TC) == 1) {
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < kCacheElems; ++i) amax = fmaxf(amax, fp8_abs_finite(v[i]));
    for (int o = 1; o < lanes; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float s = fp8_scale_from_amax(amax);
    if (valid) {
      alignas(16) uint8_t q[kCacheElems];
#pragma unroll
      for (int i = 0; i < kCacheElems; ++i) q[i] = fp8_quantize(v[i], s);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(q);
      if (lane == 0) *sdst = s;
    }
  } else {
    (void)sdst; (void)lanes; (void)lane;
    if (valid) store16<TC>(dst, v);
  }
}

template <typename TC>
struct CacheHead {  // one (batch, head) of one cache: token row i at data + i * row_stride
  TC* data;
  float* scale;     // + i * H for row i, or nullptr
  int64_t row_stride, H;
  __device__ TC* row(int64_t i) const { return data + i * row_stride; }
  __device__ float* srow(int64_t i) const { return scale ? scale + i * H : nullptr; }
};

// Compressed slot c, output tokens [0, fl) in tiles of `rows` tokens. With `barrier`, each tile reads all its
// sources, then __syncthreads(), then writes: in token mode a tile [t0, t0+rows) reads tokens >= group*t0 and
// writes tokens [t0, t0+rows), which earlier tiles have consumed and later tiles never read.
template <typename TC>
__device__ void compress_slot_cta(const CacheHead<TC>& ch, const float* w_smem, const ConvKVSlots& sl, int32_t c,
                                  bool frame_mode, int64_t fl, int64_t Dh, bool barrier) {
  const int lanes = int(Dh / kCacheElems), lane = threadIdx.x % lanes;
  const int rows = kCacheThreads / lanes;
  const int64_t src0 = int64_t(sl.compressed_src(c)) * fl, dst0 = int64_t(sl.compressed_dst(c)) * fl;
  for (int64_t t0 = 0; t0 < fl; t0 += rows) {
    const int64_t t = t0 + threadIdx.x / lanes;
    const bool valid = t < fl;
    float acc[kCacheElems];
#pragma unroll
    for (int i = 0; i < kCacheElems; ++i) acc[i] = 0.f;
    if (valid) {
      for (int32_t j = 0; j < sl.group; ++j) {
        const int64_t tok = src0 + convkv_src_token(t, j, sl.group, frame_mode, fl);
        float x[kCacheElems];
        load16<TC>(ch.row(tok) + lane * kCacheElems, x, ch.scale ? *ch.srow(tok) : 1.f);
        const float* w = w_smem + j * Dh + lane * kCacheElems;
#pragma unroll
        for (int i = 0; i < kCacheElems; ++i) acc[i] = convkv_tap(acc[i], w[i], x[i]);
      }
    }
    if (barrier) __syncthreads();
    store_chunk<TC>(ch.row(dst0 + t) + lane * kCacheElems, ch.srow(dst0 + t), acc, lanes, lane, valid);
  }
}

template <typename TC, typename TN>
__global__ void __launch_bounds__(kCacheThreads, 1) convkv_cache_update_kernel(ConvKVCacheParams p) {
  extern __shared__ float w_smem[];  // (group, Dh) weights of this head, block >= 2 only
  const int64_t hh = blockIdx.x % p.H, b = blockIdx.x / p.H;
  const ConvKVCacheTensors kv = blockIdx.y == 0 ? p.kv[0] : p.kv[1];  // no dynamic index into param space
  const ConvKVSlots sl = p.slots;
  const int64_t fl = p.frame_len, Dh = p.Dh, C = p.H * Dh;
  const int64_t S = sl.total();
  CacheHead<TC> ch{reinterpret_cast<TC*>(kv.cache) + (b * S * fl * p.H + hh) * Dh,
                   kv.scale ? kv.scale + b * S * fl * p.H + hh : nullptr, C, p.H};
  const int lanes = int(Dh / kCacheElems), lane = threadIdx.x % lanes;
  const int rows = kCacheThreads / lanes;

  if (p.block >= 2) {
    for (int64_t i = threadIdx.x; i < sl.group * Dh; i += kCacheThreads)
      w_smem[i] = kv.wt[(i / Dh) * C + hh * Dh + i % Dh];
    __syncthreads();
    // Phase A: compressed slot 0 over its own sources (tiled, read | barrier | write).
    compress_slot_cta<TC>(ch, w_smem, sl, 0, p.frame_mode, fl, Dh, /*barrier=*/true);
    __syncthreads();
    // Phase B: slots >= sinks + group are read, slots < sinks + compressed + recent <= sinks + group written.
    for (int32_t c = 1; c < sl.compressed; ++c) compress_slot_cta<TC>(ch, w_smem, sl, c, p.frame_mode, fl, Dh, false);
    const int64_t rrows = int64_t(sl.recent) * fl;
    const int64_t rs = int64_t(sl.recent_src(0)) * fl, rd = int64_t(sl.recent_dst(0)) * fl;
    constexpr int kWords = kCacheElems * int(sizeof(TC)) / 16;
    for (int64_t t = threadIdx.x / lanes; t < rrows; t += rows) {  // raw copy: FP8 bytes and scales unchanged
      const uint4* s = reinterpret_cast<const uint4*>(ch.row(rs + t) + lane * kCacheElems);
      uint4* d = reinterpret_cast<uint4*>(ch.row(rd + t) + lane * kCacheElems);
#pragma unroll
      for (int i = 0; i < kWords; ++i) d[i] = s[i];
      if (ch.scale && lane == 0) *ch.srow(rd + t) = *ch.srow(rs + t);
    }
    __syncthreads();
  }
  // Phase C: the new block, converted or quantised per (token, head).
  const int64_t n_rows = (p.block == 0 ? sl.new_dst() : sl.new_frames()) * fl;
  const int64_t d0 = p.block == 0 ? 0 : int64_t(sl.new_dst()) * fl;
  const TN* src = reinterpret_cast<const TN*>(kv.src) + (b * n_rows * p.H + hh) * Dh;
  for (int64_t t0 = 0; t0 < n_rows; t0 += rows) {
    const int64_t t = t0 + threadIdx.x / lanes;
    const bool valid = t < n_rows;
    float v[kCacheElems];
    if (valid) load16<TN>(src + t * C + lane * kCacheElems, v, 1.f);
    else {
#pragma unroll
      for (int i = 0; i < kCacheElems; ++i) v[i] = 0.f;
    }
    store_chunk<TC>(ch.row(d0 + t) + lane * kCacheElems, ch.srow(d0 + t), v, lanes, lane, valid);
  }
}

}  // namespace liveact
