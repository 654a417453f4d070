// C++ CPU kernels of the adaLN family (OpenMP over rows, auto-vectorised inner loops over the channel dim).
#include "common/cpu_utils.h"
#include "adaln/adaln_math.h"

namespace liveact {
namespace {

// Writes `res` into `out`: directly if out is contiguous, otherwise through copy_ (user-given strided out).
inline at::Tensor contiguous_target(const at::Tensor& out) {
  return out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
}
inline void finish(const at::Tensor& out, const at::Tensor& tmp) {
  if (!out.is_same(tmp)) out.copy_(tmp);
}

template <typename T>
void rms_norm_rows(const T* x, const float* w, T* y, int64_t rows, int64_t D, float eps) {
  at::parallel_for(0, rows, row_grain(D * sizeof(T)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * D;
      T* yr = y + r * D;
      float ss = 0.f;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < D; ++i) {
        float v = to_float(xr[i]);
        ss += v * v;
      }
      float rstd = norm_rstd(ss / float(D), eps);
      if (w) {
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) yr[i] = from_float<T>(to_float(xr[i]) * rstd * w[i]);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) yr[i] = from_float<T>(to_float(xr[i]) * rstd);
      }
    }
  });
}

void rms_norm_fwd_cpu(const at::Tensor& x_in, const c10::optional<at::Tensor>& weight, double eps, at::Tensor& out) {
  TORCH_CHECK(out.sizes() == x_in.sizes() && out.scalar_type() == x_in.scalar_type(),
              "rms_norm_fwd: out must match x in shape and dtype");
  at::Tensor x = x_in.contiguous();
  at::Tensor y = contiguous_target(out);
  const int64_t D = x.size(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  at::Tensor w;
  if (weight.has_value()) {
    w = weight->to(at::kFloat).contiguous();
    TORCH_CHECK(w.numel() == D, "rms_norm_fwd: weight must have ", D, " elements, got ", w.numel());
  }
  if (rows) {
    LIVEACT_DISPATCH_FLOAT(x.scalar_type(), "rms_norm_fwd", [&] {
      rms_norm_rows<scalar_t>(cptr<scalar_t>(x), w.defined() ? cptr<float>(w) : nullptr, ptr<scalar_t>(y), rows, D,
                              float(eps));
    });
  }
  finish(out, y);
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CPU, m) {
  m.impl("rms_norm_fwd", &rms_norm_fwd_cpu);
}

}  // namespace liveact
