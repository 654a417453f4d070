// CUDA kernels of the adaLN family, fp32 math through adaln_math.h. No torch headers.
// Fast path: one row per CTA held in registers (kVPT 16-byte vectors per thread), so x and y are read from
// global memory once and x_out/out written once. Fallback (unaligned rows, D not a multiple of the vector
// width, fp32 I/O, or D too large for registers): the same math with scalar loops over global memory.
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

// 16 bytes of T, loaded/stored with one vector instruction.
template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / int(sizeof(T));
  T e[N];
};
struct alignas(16) F4 {
  float v[4];
};

// N consecutive fp32 values (N = 4 or 8) as 16-byte loads.
template <int N>
__device__ __forceinline__ void load_f32(const float* p, float (&o)[N]) {
#pragma unroll
  for (int q = 0; q < N / 4; ++q) {
    F4 f = reinterpret_cast<const F4*>(p)[q];
#pragma unroll
    for (int e = 0; e < 4; ++e) o[q * 4 + e] = f.v[e];
  }
}

__device__ __forceinline__ const float* mod_row(const AdalnParams& p, const float* base, int64_t b, int64_t l) {
  return base + (b * p.frames + l / (p.L / p.frames)) * p.D;
}

template <typename T, int kThreads, int kVPT, bool kRes, bool kMod>
__global__ void __launch_bounds__(kThreads) adaln_row_vec_kernel(AdalnParams p) {
  constexpr int N = Pack<T>::N;
  __shared__ float smem[32];
  const int64_t r = blockIdx.x, b = r / p.L, l = r % p.L;
  const int nvec = int(p.D / N);
  const T* x = reinterpret_cast<const T*>(p.x) + b * p.x_sb + l * p.x_sl;
  const T* y = kRes ? reinterpret_cast<const T*>(p.y) + b * p.y_sb + l * p.y_sl : nullptr;
  const float* gate = kRes ? mod_row(p, p.gate, b, l) : nullptr;
  float v[kVPT][N];
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < kVPT; ++k) {
    const int j = threadIdx.x + k * kThreads;
    if (j < nvec) {
      Pack<T> px = reinterpret_cast<const Pack<T>*>(x)[j];
      if constexpr (kRes) {
        Pack<T> py = reinterpret_cast<const Pack<T>*>(y)[j];
        float g[N];
        load_f32<N>(gate + j * N, g);
        Pack<T> po;
#pragma unroll
        for (int e = 0; e < N; ++e) {
          po.e[e] = from_float<T>(gated_add(to_float(px.e[e]), to_float(py.e[e]), g[e]));
          v[k][e] = to_float(po.e[e]);  // the norm sees the rounded residual stream, as the unfused code does
        }
        reinterpret_cast<Pack<T>*>(reinterpret_cast<T*>(p.x_out) + r * p.D)[j] = po;
      } else {
#pragma unroll
        for (int e = 0; e < N; ++e) v[k][e] = to_float(px.e[e]);
      }
#pragma unroll
      for (int e = 0; e < N; ++e) s += p.rms ? v[k][e] * v[k][e] : v[k][e];
    } else {
#pragma unroll
      for (int e = 0; e < N; ++e) v[k][e] = 0.f;
    }
  }
  s = block_sum<kThreads>(s, smem);
  float mean = 0.f, stat;
  if (p.rms) {
    stat = s / float(p.D);
  } else {
    mean = s / float(p.D);
    float q = 0.f;  // two-pass variance over the registers: as accurate as the fp32 reference
#pragma unroll
    for (int k = 0; k < kVPT; ++k) {
      if (int(threadIdx.x) + k * kThreads < nvec) {
#pragma unroll
        for (int e = 0; e < N; ++e) q += (v[k][e] - mean) * (v[k][e] - mean);
      }
    }
    stat = block_sum<kThreads>(q, smem) / float(p.D);
  }
  const float rstd = norm_rstd(stat, p.eps);
  const float* shift = kMod ? mod_row(p, p.shift, b, l) : nullptr;
  const float* scale = kMod ? mod_row(p, p.scale, b, l) : nullptr;
  T* out = reinterpret_cast<T*>(p.out) + r * p.D;
#pragma unroll
  for (int k = 0; k < kVPT; ++k) {
    const int j = threadIdx.x + k * kThreads;
    if (j < nvec) {
      float w[N], bi[N];
      if (p.weight) load_f32<N>(p.weight + j * N, w);
      else
#pragma unroll
        for (int e = 0; e < N; ++e) w[e] = 1.f;
      if (p.bias) load_f32<N>(p.bias + j * N, bi);
      else
#pragma unroll
        for (int e = 0; e < N; ++e) bi[e] = 0.f;
      Pack<T> po;
      if constexpr (kMod) {
        float sh[N], sc[N];
        load_f32<N>(shift + j * N, sh);
        load_f32<N>(scale + j * N, sc);
#pragma unroll
        for (int e = 0; e < N; ++e) po.e[e] = from_float<T>(modulate(v[k][e], mean, rstd, w[e], bi[e], sc[e], sh[e]));
      } else {
#pragma unroll
        for (int e = 0; e < N; ++e) po.e[e] = from_float<T>(normalize(v[k][e], mean, rstd, w[e], bi[e]));
      }
      reinterpret_cast<Pack<T>*>(out)[j] = po;
    }
  }
}

// Any D, alignment and dtype: pass 1 writes x_out (if kRes) and sums; pass 2 (LayerNorm) the variance;
// pass 3 the output. Each thread re-reads only the elements it wrote itself, so no sync is needed.
template <typename T, int kThreads, bool kRes, bool kMod>
__global__ void __launch_bounds__(kThreads) adaln_row_generic_kernel(AdalnParams p) {
  __shared__ float smem[32];
  const int64_t r = blockIdx.x, b = r / p.L, l = r % p.L;
  const T* x = reinterpret_cast<const T*>(p.x) + b * p.x_sb + l * p.x_sl;
  const T* y = kRes ? reinterpret_cast<const T*>(p.y) + b * p.y_sb + l * p.y_sl : nullptr;
  const float* gate = kRes ? mod_row(p, p.gate, b, l) : nullptr;
  T* xo = kRes ? reinterpret_cast<T*>(p.x_out) + r * p.D : nullptr;
  const T* src = kRes ? xo : x;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < p.D; i += kThreads) {
    float v;
    if constexpr (kRes) {
      T t = from_float<T>(gated_add(to_float(x[i]), to_float(y[i]), gate[i]));
      xo[i] = t;
      v = to_float(t);
    } else {
      v = to_float(x[i]);
    }
    s += p.rms ? v * v : v;
  }
  s = block_sum<kThreads>(s, smem);
  float mean = 0.f, stat;
  if (p.rms) {
    stat = s / float(p.D);
  } else {
    mean = s / float(p.D);
    float q = 0.f;
    for (int64_t i = threadIdx.x; i < p.D; i += kThreads) {
      float d = to_float(src[i]) - mean;
      q += d * d;
    }
    stat = block_sum<kThreads>(q, smem) / float(p.D);
  }
  const float rstd = norm_rstd(stat, p.eps);
  const float* shift = kMod ? mod_row(p, p.shift, b, l) : nullptr;
  const float* scale = kMod ? mod_row(p, p.scale, b, l) : nullptr;
  T* out = reinterpret_cast<T*>(p.out) + r * p.D;
  for (int64_t i = threadIdx.x; i < p.D; i += kThreads) {
    const float w = p.weight ? p.weight[i] : 1.f, bi = p.bias ? p.bias[i] : 0.f;
    const float v = to_float(src[i]);
    out[i] = from_float<T>(kMod ? modulate(v, mean, rstd, w, bi, scale[i], shift[i]) : normalize(v, mean, rstd, w, bi));
  }
}

// out = round(x + y * gate): grid-stride over 16-byte vectors (kVec) or elements of the (B*L, D) output.
template <typename T, bool kVec>
__global__ void __launch_bounds__(256) gated_residual_kernel(AdalnParams p) {
  constexpr int N = kVec ? Pack<T>::N : 1;
  const int64_t per_row = p.D / N, total = p.B * p.L * per_row, frame_len = p.L / p.frames;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, c = (i - r * per_row) * N, b = r / p.L, l = r - b * p.L;
    const T* x = reinterpret_cast<const T*>(p.x) + b * p.x_sb + l * p.x_sl + c;
    const T* y = reinterpret_cast<const T*>(p.y) + b * p.y_sb + l * p.y_sl + c;
    const float* g = p.gate + (b * p.frames + l / frame_len) * p.D + c;
    T* o = reinterpret_cast<T*>(p.out) + r * p.D + c;
    if constexpr (kVec) {
      Pack<T> px = *reinterpret_cast<const Pack<T>*>(x), py = *reinterpret_cast<const Pack<T>*>(y), po;
      float gv[Pack<T>::N];
      load_f32<Pack<T>::N>(g, gv);
#pragma unroll
      for (int e = 0; e < Pack<T>::N; ++e) po.e[e] = from_float<T>(gated_add(to_float(px.e[e]), to_float(py.e[e]), gv[e]));
      *reinterpret_cast<Pack<T>*>(o) = po;
    } else {
      *o = from_float<T>(gated_add(to_float(*x), to_float(*y), *g));
    }
  }
}

}  // namespace liveact
