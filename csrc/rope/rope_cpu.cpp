// C++ CPU kernel of rope3d: OpenMP over tokens; the token's cos/sin row is built once (rope_math.h) and
// applied to every head with a vectorised pair loop.
#include <vector>

#include "common/cpu_utils.h"
#include "rope/rope_math.h"

namespace liveact {
namespace {

template <typename T>
void rope3d_rows(const T* x, T* y, const RopeTables& tb, int64_t B, int64_t N, int64_t H, int64_t Dh,
                 int64_t sB, int64_t sN, int64_t sH, int64_t h, int64_t w) {
  const int64_t P = Dh / 2;
  at::parallel_for(0, B * N, row_grain(H * Dh * int64_t(sizeof(T))), [&](int64_t t0, int64_t t1) {
    std::vector<float> cbuf(P), sbuf(P);
    float* cs = cbuf.data();
    float* sn = sbuf.data();
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / N, n = t % N;
      const int64_t f = n / (h * w), r = (n / w) % h, c = n % w;
      for (int64_t i = 0; i < P; ++i) rope_cos_sin(tb, int32_t(i), f, r, c, cs[i], sn[i]);
      for (int64_t hh = 0; hh < H; ++hh) {
        const T* xr = x + b * sB + n * sN + hh * sH;
        T* yr = y + (t * H + hh) * Dh;
#pragma omp simd
        for (int64_t i = 0; i < P; ++i) {
          float oa, ob;
          rope_rotate(to_float(xr[2 * i]), to_float(xr[2 * i + 1]), cs[i], sn[i], oa, ob);
          yr[2 * i] = from_float<T>(oa);
          yr[2 * i + 1] = from_float<T>(ob);
        }
      }
    }
  });
}

void check_table(const at::Tensor& t, const char* name, int64_t rows) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.dim() == 2 && t.is_contiguous() && t.device().is_cpu(),
              "rope3d_fwd: ", name, " must be a contiguous 2-D float32 CPU tensor, got ", t.sizes(), " ",
              t.scalar_type());
  if (rows >= 0) TORCH_CHECK(t.size(0) == rows, "rope3d_fwd: ", name, " must have ", rows, " rows, got ", t.size(0));
}

void rope3d_fwd_cpu(const at::Tensor& x_in, const at::Tensor& cos_f, const at::Tensor& sin_f, const at::Tensor& cos_h,
                    const at::Tensor& sin_h, const at::Tensor& cos_w, const at::Tensor& sin_w, at::Tensor& out) {
  TORCH_CHECK(x_in.dim() == 4, "rope3d_fwd: x must be (B, N, H, Dh), got ", x_in.sizes());
  TORCH_CHECK(out.sizes() == x_in.sizes() && out.scalar_type() == x_in.scalar_type(),
              "rope3d_fwd: out must match x in shape and dtype");
  check_table(cos_f, "cos_f", -1);
  check_table(cos_h, "cos_h", -1);
  check_table(cos_w, "cos_w", -1);
  check_table(sin_f, "sin_f", cos_f.size(0));
  check_table(sin_h, "sin_h", cos_h.size(0));
  check_table(sin_w, "sin_w", cos_w.size(0));
  const int64_t B = x_in.size(0), N = x_in.size(1), H = x_in.size(2), Dh = x_in.size(3);
  const int64_t Fr = cos_f.size(0), h = cos_h.size(0), w = cos_w.size(0);
  TORCH_CHECK(Fr * h * w == N, "rope3d_fwd: tables give ", Fr, "x", h, "x", w, " tokens, x has ", N);
  const int64_t nf = cos_f.size(1), nh = cos_h.size(1), nw = cos_w.size(1);
  TORCH_CHECK(Dh % 2 == 0 && 2 * (nf + nh + nw) == Dh, "rope3d_fwd: table widths ", nf, "+", nh, "+", nw,
              " pairs do not cover head_dim ", Dh);
  TORCH_CHECK(sin_f.size(1) == nf && sin_h.size(1) == nh && sin_w.size(1) == nw, "rope3d_fwd: sin/cos widths differ");
  // Any strides over (B, N, H); the channel dim must be unit-stride for the pair loop.
  at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  at::Tensor y = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  RopeTables tb{cos_f.const_data_ptr<float>(), sin_f.const_data_ptr<float>(), cos_h.const_data_ptr<float>(),
                sin_h.const_data_ptr<float>(), cos_w.const_data_ptr<float>(), sin_w.const_data_ptr<float>(),
                int32_t(nf), int32_t(nh), int32_t(nw)};
  if (x.numel()) {
    LIVEACT_DISPATCH_FLOAT(x.scalar_type(), "rope3d_fwd", [&] {
      rope3d_rows<scalar_t>(cptr<scalar_t>(x), ptr<scalar_t>(y), tb, B, N, H, Dh, x.stride(0), x.stride(1),
                            x.stride(2), h, w);
    });
  }
  if (!out.is_same(y)) out.copy_(y);
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CPU, m) {
  m.impl("rope3d_fwd", &rope3d_fwd_cpu);
}

}  // namespace liveact
