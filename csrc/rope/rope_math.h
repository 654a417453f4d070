// Per-element math of rope3d (table lookup per channel pair, the rotation), shared by the C++ CPU kernel
// and the CUDA kernel so that the CPU tests exercise it. No torch headers.
#pragma once
#include <cstdint>
#include "common/macros.h"

namespace liveact {

// Rotation of one adjacent channel pair (a, b) = (x[2i], x[2i+1]) by the angle whose cos/sin are (c, s):
// the real form of (a + ib) * (c + is), what Wan computes with complex128.
LIVEACT_HD void rope_rotate(float a, float b, float c, float s, float& oa, float& ob) {
  oa = a * c - b * s;
  ob = a * s + b * c;
}

// fp32 cos/sin tables of the three axes: rows indexed by (frame, row, column) of the token, pairs per axis
// nf, nh, nw (nf + nh + nw = head_dim / 2). Row-major [F, nf], [h, nh], [w, nw].
struct RopeTables {
  const float* cos_f; const float* sin_f;
  const float* cos_h; const float* sin_h;
  const float* cos_w; const float* sin_w;
  int32_t nf, nh, nw;
};

// cos/sin of channel pair i of a token at grid position (f, r, c): the first nf pairs rotate with the
// frame position, the next nh with the row, the last nw with the column.
LIVEACT_HD void rope_cos_sin(const RopeTables& t, int32_t i, int64_t f, int64_t r, int64_t c, float& cs, float& sn) {
  if (i < t.nf) {
    cs = t.cos_f[f * t.nf + i]; sn = t.sin_f[f * t.nf + i];
  } else if (i < t.nf + t.nh) {
    const int32_t k = i - t.nf;
    cs = t.cos_h[r * t.nh + k]; sn = t.sin_h[r * t.nh + k];
  } else {
    const int32_t k = i - t.nf - t.nh;
    cs = t.cos_w[c * t.nw + k]; sn = t.sin_w[c * t.nw + k];
  }
}

}  // namespace liveact
