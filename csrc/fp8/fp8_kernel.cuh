// CUDA kernels of the FP8 family: quantise (a warp per group, or a grid per group for large groups; amax
// reduced in registers and warp shuffles) and dequantise (flat, 16 fp8 per 16-byte load). The per-element
// math is fp8_math.h, shared with the CPU kernels. No torch headers.
#pragma once
#include "fp8/fp8.h"
#include "fp8/fp8_math.h"

namespace liveact {

// 16 bytes of T: one ld/st.global.v4 when 16-byte aligned.
template <typename T, int kN = 16 / int(sizeof(T))>
struct alignas(16) Vec16 {
  T v[kN];
};
// kN fp8 bytes, stored with one instruction (4, 8 or 16 bytes).
template <int kN>
struct alignas(kN) Bytes {
  uint8_t v[kN];
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fp8_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide max (kThreads a multiple of 32); every thread gets the result.
template <int kThreads>
__device__ __forceinline__ float block_max(float v, float* smem) {
  v = warp_max(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? smem[lane] : 0.f;
  v = warp_max(v);
  __syncthreads();
  return v;
}

// amax of [x, x + n) strided over `nthreads` threads with index `tid`; kVec: 16-byte loads (x aligned, n % kE == 0).
template <typename T, bool kVec>
__device__ __forceinline__ float span_amax(const T* x, int64_t n, int64_t tid, int64_t nthreads) {
  float m = 0.f;
  if constexpr (kVec) {
    constexpr int kE = 16 / int(sizeof(T));
    const Vec16<T>* xv = reinterpret_cast<const Vec16<T>*>(x);
    for (int64_t i = tid; i < n / kE; i += nthreads) {
      const Vec16<T> a = xv[i];
#pragma unroll
      for (int j = 0; j < kE; ++j) m = fp8_max(m, fp8_finite_abs(to_float(a.v[j])));
    }
  } else {
    for (int64_t i = tid; i < n; i += nthreads) m = fp8_max(m, fp8_finite_abs(to_float(x[i])));
  }
  return m;
}

template <typename T, bool kVec>
__device__ __forceinline__ void span_quantize(const T* x, int64_t n, float s, uint8_t* q, int64_t tid, int64_t nthreads) {
  if constexpr (kVec) {
    constexpr int kE = 16 / int(sizeof(T));
    const Vec16<T>* xv = reinterpret_cast<const Vec16<T>*>(x);
    Bytes<kE>* qv = reinterpret_cast<Bytes<kE>*>(q);
    for (int64_t i = tid; i < n / kE; i += nthreads) {
      const Vec16<T> a = xv[i];
      Bytes<kE> b;
#pragma unroll
      for (int j = 0; j < kE; ++j) b.v[j] = fp8_quantize(to_float(a.v[j]), s);
      qv[i] = b;
    }
  } else {
    for (int64_t i = tid; i < n; i += nthreads) q[i] = fp8_quantize(to_float(x[i]), s);
  }
}

// One warp per group (groups up to kWarpGroupMax elements): the second pass re-reads the row from L1/L2.
template <typename T, bool kVec, int kThreads>
__global__ void __launch_bounds__(kThreads) quantize_fp8_warp_kernel(Fp8QuantParams p) {
  const int64_t g = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (g >= p.groups) return;
  const T* x = reinterpret_cast<const T*>(p.x) + g * p.group_size;
  const float s = fp8_scale_from_amax(warp_max(span_amax<T, kVec>(x, p.group_size, lane, 32)));
  if (lane == 0) p.scale[g] = s;
  span_quantize<T, kVec>(x, p.group_size, s, p.q + g * p.group_size, lane, 32);
}

// Large groups, pass 1: grid (chunks, groups); each CTA reduces its chunk and merges into the group's amax
// with atomicMax on the bits (non-negative floats order like their bit patterns). p.scale holds the amax
// bits, zeroed by the launcher.
template <typename T, bool kVec, int kThreads>
__global__ void __launch_bounds__(kThreads) fp8_amax_chunk_kernel(Fp8QuantParams p, int64_t chunk) {
  __shared__ float smem[32];
  const int64_t g = blockIdx.y, c0 = int64_t(blockIdx.x) * chunk;
  const int64_t n = c0 + chunk < p.group_size ? chunk : p.group_size - c0;
  const T* x = reinterpret_cast<const T*>(p.x) + g * p.group_size + c0;
  const float m = block_max<kThreads>(span_amax<T, kVec>(x, n, threadIdx.x, kThreads), smem);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned int*>(p.scale) + g, __float_as_uint(m));
}

// Pass 2: amax bits -> scale, in place.
__global__ void fp8_scale_finalize_kernel(float* scale, int64_t groups) {
  const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g < groups) scale[g] = fp8_scale_from_amax(scale[g]);  // scale[g] holds the amax (bits of a float)
}

// Pass 3: quantise each chunk with its group's scale.
template <typename T, bool kVec, int kThreads>
__global__ void __launch_bounds__(kThreads) fp8_quantize_chunk_kernel(Fp8QuantParams p, int64_t chunk) {
  const int64_t g = blockIdx.y, c0 = int64_t(blockIdx.x) * chunk;
  const int64_t n = c0 + chunk < p.group_size ? chunk : p.group_size - c0;
  const int64_t off = g * p.group_size + c0;
  span_quantize<T, kVec>(reinterpret_cast<const T*>(p.x) + off, n, p.scale[g], p.q + off, threadIdx.x, kThreads);
}

// Dequantise: each thread turns 16 fp8 bytes (one 16-byte load) into 16 outputs; kSameGroup when
// group_size % 16 == 0 (one scale per vector). kVec false: one element per thread (unaligned views).
template <typename T, bool kVec, bool kSameGroup>
__global__ void __launch_bounds__(256) dequantize_fp8_kernel(Fp8DequantParams p) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  T* out = reinterpret_cast<T*>(p.out);
  if constexpr (kVec) {
    const int64_t i0 = t * 16;
    if (i0 >= p.n) return;
    if (i0 + 16 <= p.n) {
      const Bytes<16> b = reinterpret_cast<const Bytes<16>*>(p.q)[t];
      constexpr int kE = 16 / int(sizeof(T));
      Vec16<T> o[16 / kE];
      int64_t g = i0 / p.group_size, next = (g + 1) * p.group_size;
      float s = p.scale[g];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        if constexpr (!kSameGroup) {
          while (i0 + j >= next) { ++g; next += p.group_size; s = p.scale[g]; }
        }
        o[j / kE].v[j % kE] = from_float<T>(fp8_dequantize(b.v[j], s));
      }
      Vec16<T>* ov = reinterpret_cast<Vec16<T>*>(out + i0);
#pragma unroll
      for (int j = 0; j < 16 / kE; ++j) ov[j] = o[j];
    } else {  // the tail (< 16 elements)
      for (int64_t i = i0; i < p.n; ++i) out[i] = from_float<T>(fp8_dequantize(p.q[i], p.scale[i / p.group_size]));
    }
  } else {
    if (t < p.n) out[t] = from_float<T>(fp8_dequantize(p.q[t], p.scale[t / p.group_size]));
  }
}

}  // namespace liveact
