// Per-row CPU loops of the adaLN family (one row = one token's D channels), written as `#pragma omp simd simdlen(16)`
// loops over the shared per-element math of adaln_math.h. No torch headers: adaln_cpu.cpp parallelises rows.
#pragma once
#include <cstdint>

#include "adaln/adaln_math.h"
#include "common/numeric.h"

namespace liveact {

// Modulation of one row: fp32 shift/scale rows (D,), optional fp32 affine weight/bias (D,) of the norm.
struct RowMod {
  const float* shift;  // nullptr: no modulation (plain norm, rms_norm)
  const float* scale;
  const float* weight;  // nullptr: 1
  const float* bias;    // nullptr: 0
};

// Stores round_T(a) to *p and returns it as a float. Works on the bits (no T temporaries), which GCC vectorises.
inline float store_rounded(float* p, float a) {
  *p = a;
  return a;
}
inline float store_rounded(bf16_t* p, float a) {
  const uint16_t h = float_to_bf16(a);
  p->bits = h;
  return bf16_to_float(h);
}
inline float store_rounded(fp16_t* p, float a) {
  const uint16_t h = float_to_fp16(a);
  p->bits = h;
  return fp16_to_float(h);
}

// Pass 1 of a fused row. kResidual: buf = round_T(x + y * gate), stored to x_out as well (the residual
// stream the next layer reads); else buf = x. Returns sum(buf) and sum(buf^2) (sum^2 only for RMS).
template <typename T, bool kResidual, bool kRms>
inline void row_load(const T* __restrict x, const T* __restrict y, const float* __restrict gate, T* __restrict x_out,
                     float* __restrict buf, int64_t D, float& sum_out) {
  float s = 0.f;
  if constexpr (kResidual) {
#pragma omp simd simdlen(16) reduction(+ : s)
    for (int64_t i = 0; i < D; ++i) {
      // Rounded to T before the norm, exactly as the unfused composition sees the new residual stream.
      const float v = store_rounded(x_out + i, gated_add(to_float(x[i]), to_float(y[i]), gate[i]));
      buf[i] = v;
      s += kRms ? v * v : v;
    }
  } else {
#pragma omp simd simdlen(16) reduction(+ : s)
    for (int64_t i = 0; i < D; ++i) {
      float v = to_float(x[i]);
      buf[i] = v;
      s += kRms ? v * v : v;
    }
  }
  sum_out = s;
}

// Pass 3: out = modulate(buf) with the statistics of the row. kW/kB: affine weight/bias present.
template <typename T, bool kMod, bool kW, bool kB>
inline void row_store(const float* __restrict buf, const RowMod& m, float mean, float rstd, T* __restrict out,
                      int64_t D) {
  const float* __restrict sh = m.shift;
  const float* __restrict sc = m.scale;
  const float* __restrict w = m.weight;
  const float* __restrict b = m.bias;
#pragma omp simd simdlen(16)
  for (int64_t i = 0; i < D; ++i) {
    float wi = kW ? w[i] : 1.f;
    float bi = kB ? b[i] : 0.f;
    float v = kMod ? modulate(buf[i], mean, rstd, wi, bi, sc[i], sh[i]) : normalize(buf[i], mean, rstd, wi, bi);
    out[i] = from_float<T>(v);
  }
}

// One fused row: [x_out = round(x + y*gate)], out = modulate(norm(x or x_out)). `buf` is D floats of scratch
// (the row stays in L1/L2 between the passes, so x and y are read from memory once).
template <typename T, bool kResidual, bool kMod>
inline void norm_row(const T* x, const T* y, const float* gate, T* x_out, const RowMod& m, T* out, int64_t D,
                     float eps, bool rms, float* buf) {
  float s = 0.f, mean = 0.f, stat;
  if (rms) {
    row_load<T, kResidual, true>(x, y, gate, x_out, buf, D, s);
    stat = s / float(D);
  } else {
    row_load<T, kResidual, false>(x, y, gate, x_out, buf, D, s);
    mean = s / float(D);
    // Two-pass variance over the cached row: as accurate as the fp32 reference, and nearly free.
    float v = 0.f;
    const float* __restrict bb = buf;
#pragma omp simd simdlen(16) reduction(+ : v)
    for (int64_t i = 0; i < D; ++i) {
      float d = bb[i] - mean;
      v += d * d;
    }
    stat = v / float(D);
  }
  const float rstd = norm_rstd(stat, eps);
  const int aff = (m.weight ? 1 : 0) | (m.bias ? 2 : 0);
  switch (aff) {
    case 0: row_store<T, kMod, false, false>(buf, m, mean, rstd, out, D); break;
    case 1: row_store<T, kMod, true, false>(buf, m, mean, rstd, out, D); break;
    case 2: row_store<T, kMod, false, true>(buf, m, mean, rstd, out, D); break;
    default: row_store<T, kMod, true, true>(buf, m, mean, rstd, out, D); break;
  }
}

// out = round(x + y * gate) over one row.
template <typename T>
inline void gated_row(const T* __restrict x, const T* __restrict y, const float* __restrict gate, T* __restrict out,
                      int64_t D) {
#pragma omp simd simdlen(16)
  for (int64_t i = 0; i < D; ++i) out[i] = from_float<T>(gated_add(to_float(x[i]), to_float(y[i]), gate[i]));
}

}  // namespace liveact
