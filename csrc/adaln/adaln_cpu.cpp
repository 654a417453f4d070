// C++ CPU kernels of the adaLN family: at::parallel_for over rows (tokens), `omp simd` loops over channels
// (adaln_rows.h), per-element math from adaln_math.h (shared with the CUDA kernels).
#include <memory>

#include "common/cpu_utils.h"
#include "adaln/adaln_math.h"
#include "adaln/adaln_rows.h"

namespace liveact {
namespace {

// Writes into `out` directly if it is contiguous, otherwise into a temporary copied back (user-given strided out).
inline at::Tensor contiguous_target(const at::Tensor& out) {
  return out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
}
inline void finish(const at::Tensor& out, const at::Tensor& tmp) {
  if (!out.is_same(tmp)) out.copy_(tmp);
}

// x: (batch, seqlen, dim) with a unit channel stride, read in place (no copy) whatever its other strides.
struct Rows3 {
  at::Tensor t;
  int64_t sb, sl;
};
inline Rows3 rows3(const at::Tensor& x) {
  at::Tensor t = x.stride(-1) == 1 ? x : x.contiguous();
  return {t, t.stride(0), t.stride(1)};
}

// shift/scale/gate as the kernels want them: contiguous fp32 (batch, frames, dim).
inline at::Tensor mod_rows(const char* op, const char* name, const at::Tensor& t, int64_t B, int64_t L, int64_t D) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == B && t.size(2) == D && t.size(1) >= 1 && L % t.size(1) == 0, op, ": ",
              name, " must be (", B, ", frames, ", D, ") with frames dividing ", L, ", got ", t.sizes());
  return t.to(at::kFloat).contiguous();
}

inline at::Tensor affine(const char* op, const char* name, const c10::optional<at::Tensor>& t, int64_t D) {
  if (!t.has_value()) return at::Tensor();
  TORCH_CHECK(t->numel() == D, op, ": ", name, " must have ", D, " elements, got ", t->numel());
  return t->to(at::kFloat).contiguous();
}

inline const float* opt_ptr(const at::Tensor& t) { return t.defined() ? cptr<float>(t) : nullptr; }

inline void check_out(const char* op, const char* name, const at::Tensor& out, const at::Tensor& x) {
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(), op, ": ", name,
              " must match x in shape and dtype, got ", out.sizes(), " ", out.scalar_type());
}

// The fused row loop shared by adaln_modulate (kResidual=false) and adaln_residual (kResidual=true).
template <typename T, bool kResidual>
void fused_rows(const Rows3& x, const Rows3* y, const float* gate, const float* shift, const float* scale,
                const float* w, const float* b, T* x_out, T* out, int64_t B, int64_t L, int64_t D, int64_t frames,
                float eps, bool rms) {
  const int64_t frame_len = L / frames;
  const T* xp = cptr<T>(x.t);
  const T* yp = y ? cptr<T>(y->t) : nullptr;
  at::parallel_for(0, B * L, row_grain(D * int64_t(sizeof(T))), [&](int64_t r0, int64_t r1) {
    std::unique_ptr<float[]> buf(new float[D]);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bi = r / L, l = r % L;
      const int64_t mrow = (bi * frames + l / frame_len) * D;
      RowMod m{shift + mrow, scale + mrow, w, b};
      const T* xr = xp + bi * x.sb + l * x.sl;
      const T* yr = kResidual ? yp + bi * y->sb + l * y->sl : nullptr;
      norm_row<T, kResidual, true>(xr, yr, kResidual ? gate + mrow : nullptr, kResidual ? x_out + r * D : nullptr,
                                   m, out + r * D, D, eps, rms, buf.get());
    }
  });
}

void adaln_modulate_fwd_cpu(const at::Tensor& x_in, const at::Tensor& shift_in, const at::Tensor& scale_in,
                            const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                            double eps, bool rms, at::Tensor& out) {
  const char* op = "adaln_modulate_fwd";
  TORCH_CHECK(x_in.dim() == 3, op, ": x must be (batch, seqlen, dim), got ", x_in.sizes());
  check_out(op, "out", out, x_in);
  const int64_t B = x_in.size(0), L = x_in.size(1), D = x_in.size(2);
  at::Tensor shift = mod_rows(op, "shift", shift_in, B, L, D), scale = mod_rows(op, "scale", scale_in, B, L, D);
  TORCH_CHECK(shift.sizes() == scale.sizes(), op, ": shift and scale must have the same frames, got ",
              shift.sizes(), " and ", scale.sizes());
  at::Tensor w = affine(op, "weight", weight, D), b = affine(op, "bias", bias, D);
  Rows3 x = rows3(x_in);
  at::Tensor o = contiguous_target(out);
  if (B * L * D != 0) {
    LIVEACT_DISPATCH_FLOAT(x.t.scalar_type(), op, [&] {
      fused_rows<scalar_t, false>(x, nullptr, nullptr, cptr<float>(shift), cptr<float>(scale), opt_ptr(w), opt_ptr(b),
                                  nullptr, ptr<scalar_t>(o), B, L, D, shift.size(1), float(eps), rms);
    });
  }
  finish(out, o);
}

void adaln_residual_fwd_cpu(const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& gate_in,
                            const at::Tensor& shift_in, const at::Tensor& scale_in,
                            const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                            double eps, bool rms, at::Tensor& x_out, at::Tensor& out) {
  const char* op = "adaln_residual_fwd";
  TORCH_CHECK(x_in.dim() == 3, op, ": x must be (batch, seqlen, dim), got ", x_in.sizes());
  TORCH_CHECK(y_in.sizes() == x_in.sizes() && y_in.scalar_type() == x_in.scalar_type(), op,
              ": y must match x in shape and dtype, got ", y_in.sizes(), " ", y_in.scalar_type());
  check_out(op, "x_out", x_out, x_in);
  check_out(op, "out", out, x_in);
  const int64_t B = x_in.size(0), L = x_in.size(1), D = x_in.size(2);
  at::Tensor gate = mod_rows(op, "gate", gate_in, B, L, D);
  at::Tensor shift = mod_rows(op, "shift", shift_in, B, L, D), scale = mod_rows(op, "scale", scale_in, B, L, D);
  TORCH_CHECK(gate.sizes() == shift.sizes() && shift.sizes() == scale.sizes(), op,
              ": gate, shift and scale must have the same frames, got ", gate.sizes(), ", ", shift.sizes(), ", ",
              scale.sizes());
  at::Tensor w = affine(op, "weight", weight, D), b = affine(op, "bias", bias, D);
  Rows3 x = rows3(x_in), y = rows3(y_in);
  at::Tensor xo = contiguous_target(x_out), o = contiguous_target(out);
  if (B * L * D != 0) {
    LIVEACT_DISPATCH_FLOAT(x.t.scalar_type(), op, [&] {
      fused_rows<scalar_t, true>(x, &y, cptr<float>(gate), cptr<float>(shift), cptr<float>(scale), opt_ptr(w),
                                 opt_ptr(b), ptr<scalar_t>(xo), ptr<scalar_t>(o), B, L, D, shift.size(1), float(eps),
                                 rms);
    });
  }
  finish(x_out, xo);
  finish(out, o);
}

void gated_residual_fwd_cpu(const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& gate_in,
                            at::Tensor& out) {
  const char* op = "gated_residual_fwd";
  TORCH_CHECK(x_in.dim() == 3, op, ": x must be (batch, seqlen, dim), got ", x_in.sizes());
  TORCH_CHECK(y_in.sizes() == x_in.sizes() && y_in.scalar_type() == x_in.scalar_type(), op,
              ": y must match x in shape and dtype, got ", y_in.sizes(), " ", y_in.scalar_type());
  check_out(op, "out", out, x_in);
  const int64_t B = x_in.size(0), L = x_in.size(1), D = x_in.size(2);
  at::Tensor gate = mod_rows(op, "gate", gate_in, B, L, D);
  Rows3 x = rows3(x_in), y = rows3(y_in);
  at::Tensor o = contiguous_target(out);
  if (B * L * D != 0) {
    const int64_t frames = gate.size(1), frame_len = L / frames;
    LIVEACT_DISPATCH_FLOAT(x.t.scalar_type(), op, [&] {
      const scalar_t* xp = cptr<scalar_t>(x.t);
      const scalar_t* yp = cptr<scalar_t>(y.t);
      const float* g = cptr<float>(gate);
      scalar_t* op_ = ptr<scalar_t>(o);
      at::parallel_for(0, B * L, row_grain(D * int64_t(sizeof(scalar_t))), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t bi = r / L, l = r % L;
          gated_row<scalar_t>(xp + bi * x.sb + l * x.sl, yp + bi * y.sb + l * y.sl,
                              g + (bi * frames + l / frame_len) * D, op_ + r * D, D);
        }
      });
    });
  }
  finish(out, o);
}

void rms_norm_fwd_cpu(const at::Tensor& x_in, const c10::optional<at::Tensor>& weight, double eps, at::Tensor& out) {
  const char* op = "rms_norm_fwd";
  check_out(op, "out", out, x_in);
  TORCH_CHECK(x_in.dim() >= 1, op, ": x must have at least 1 dim");
  const int64_t D = x_in.size(-1);
  const int64_t rows = D ? x_in.numel() / D : 0;
  // (rows, D) view with a unit channel stride when the layout allows it (sliced inputs), else a copy.
  at::Tensor x2 = x_in.reshape({rows, D});
  if (x2.stride(1) != 1 && D > 1) x2 = x2.contiguous();
  const int64_t rs = rows > 1 ? x2.stride(0) : D;
  at::Tensor w = affine(op, "weight", weight, D);
  at::Tensor o = contiguous_target(out);
  if (rows && D) {
    LIVEACT_DISPATCH_FLOAT(x2.scalar_type(), op, [&] {
      const scalar_t* xp = cptr<scalar_t>(x2);
      scalar_t* yp = ptr<scalar_t>(o);
      RowMod m{nullptr, nullptr, opt_ptr(w), nullptr};
      at::parallel_for(0, rows, row_grain(D * int64_t(sizeof(scalar_t))), [&](int64_t r0, int64_t r1) {
        std::unique_ptr<float[]> buf(new float[D]);
        for (int64_t r = r0; r < r1; ++r)
          norm_row<scalar_t, false, false>(xp + r * rs, nullptr, nullptr, nullptr, m, yp + r * D, D, float(eps),
                                           /*rms=*/true, buf.get());
      });
    });
  }
  finish(out, o);
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CPU, m) {
  m.impl("adaln_modulate_fwd", &adaln_modulate_fwd_cpu);
  m.impl("gated_residual_fwd", &gated_residual_fwd_cpu);
  m.impl("adaln_residual_fwd", &adaln_residual_fwd_cpu);
  m.impl("rms_norm_fwd", &rms_norm_fwd_cpu);
}

}  // namespace liveact
