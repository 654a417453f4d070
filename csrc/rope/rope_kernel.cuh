// CUDA kernel of rope3d: each thread rotates kVec adjacent channels (kVec/2 pairs) of one (token, head)
// row with one vector load and store; cos/sin come from the fp32 per-axis tables (rope_math.h). No torch headers.
#pragma once
#include "rope/rope.h"
#include "common/numeric.h"

namespace liveact {

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) RopeVec { T v[kVec]; };

template <typename T, int kVec>
__global__ void __launch_bounds__(256) rope3d_fwd_kernel(Rope3dParams p) {
  const int64_t chunks = p.Dh / kVec;
  const int64_t total = p.B * p.N * p.H * chunks;
  const int64_t hw = p.h * p.w;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = idx % chunks;
    const int64_t row = idx / chunks;          // ((b * N + n) * H + hh)
    const int64_t hh = row % p.H;
    const int64_t tok = row / p.H;
    const int64_t n = tok % p.N, b = tok / p.N;
    const int64_t f = n / hw, r = (n / p.w) % p.h, c = n % p.w;
    const T* xr = reinterpret_cast<const T*>(p.x) + b * p.sxB + n * p.sxN + hh * p.sxH + k * kVec;
    T* yr = reinterpret_cast<T*>(p.out) + row * p.Dh + k * kVec;
    const RopeVec<T, kVec> in = *reinterpret_cast<const RopeVec<T, kVec>*>(xr);
    RopeVec<T, kVec> o;
#pragma unroll
    for (int q = 0; q < kVec / 2; ++q) {
      float cs, sn, oa, ob;
      rope_cos_sin(p.tables, int32_t(k * (kVec / 2) + q), f, r, c, cs, sn);
      rope_rotate(to_float(in.v[2 * q]), to_float(in.v[2 * q + 1]), cs, sn, oa, ob);
      o.v[2 * q] = from_float<T>(oa);
      o.v[2 * q + 1] = from_float<T>(ob);
    }
    *reinterpret_cast<RopeVec<T, kVec>*>(yr) = o;
  }
}

}  // namespace liveact
