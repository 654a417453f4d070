// C++ CPU kernels of the causal depthwise conv1d family: the strided forward with initial/final states and
// the streaming update (causal-conv1d semantics, any width and stride). OpenMP over (batch, channel) rows.
#include <vector>

#include "common/cpu_utils.h"
#include "conv1d/conv1d_math.h"

namespace liveact {
namespace {

bool is_silu(const c10::optional<c10::string_view>& act) {
  if (!act.has_value()) return false;
  TORCH_CHECK(*act == "silu" || *act == "swish", "causal_dwconv1d: activation must be None, 'silu' or 'swish'");
  return true;
}

// xp = [initial_states (W-1) | x (L)] in fp32 per row; out[t] = act(bias + sum_k w[k] xp[t*stride + k]).
template <typename T>
void dwconv_rows(const T* x, int64_t sxB, int64_t sxC, const T* init, const float* w, const float* bias, T* out,
                 T* fin, int64_t B, int64_t C, int64_t L, int64_t W, int64_t stride, int64_t Lo, bool silu) {
  at::parallel_for(0, B * C, row_grain(L * int64_t(sizeof(T))), [&](int64_t r0, int64_t r1) {
    std::vector<float> xp(W - 1 + L), acc(Lo);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / C, c = r % C;
      const T* xr = x + b * sxB + c * sxC;
      for (int64_t i = 0; i < W - 1; ++i) xp[i] = init ? to_float(init[r * (W - 1) + i]) : 0.f;
#pragma omp simd
      for (int64_t i = 0; i < L; ++i) xp[W - 1 + i] = to_float(xr[i]);
      const float bv = bias ? bias[c] : 0.f;
      for (int64_t t = 0; t < Lo; ++t) acc[t] = bv;
      const float* wr = w + c * W;
      for (int64_t k = 0; k < W; ++k) {
        const float wk = wr[k];
        const float* xk = xp.data() + k;
        if (stride == 1) {
#pragma omp simd
          for (int64_t t = 0; t < Lo; ++t) acc[t] = dwconv_tap(acc[t], wk, xk[t]);
        } else {
          for (int64_t t = 0; t < Lo; ++t) acc[t] = dwconv_tap(acc[t], wk, xk[t * stride]);
        }
      }
      T* o = out + r * Lo;
      if (silu) {  // a separate pass that vectorises (dwconv_expf has no libm call)
#pragma omp simd
        for (int64_t t = 0; t < Lo; ++t) acc[t] = dwconv_activation(acc[t], true);
      }
      for (int64_t t = 0; t < Lo; ++t) o[t] = from_float<T>(acc[t]);
      if (fin) {
        T* f = fin + r * (W - 1);
        for (int64_t i = 0; i < W - 1; ++i) f[i] = from_float<T>(xp[L + i]);  // exact: values came from T
      }
    }
  });
}

void causal_dwconv1d_fwd_cpu(const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& initial_states, int64_t stride,
                             c10::optional<c10::string_view> activation, at::Tensor& out,
                             c10::optional<at::Tensor> final_states) {
  const char* op = "causal_dwconv1d_fwd";
  TORCH_CHECK(x_in.dim() == 3, op, ": x must be (B, C, L), got ", x_in.sizes());
  const int64_t B = x_in.size(0), C = x_in.size(1), L = x_in.size(2);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == C && weight.size(1) >= 1, op, ": weight must be (C, W)");
  TORCH_CHECK(stride >= 1, op, ": stride must be >= 1");
  const int64_t W = weight.size(1), Lo = (L + stride - 1) / stride;
  TORCH_CHECK(out.sizes() == at::IntArrayRef({B, C, Lo}) && out.scalar_type() == x_in.scalar_type(), op,
              ": out must be (", B, ", ", C, ", ", Lo, ") of x's dtype, got ", out.sizes());
  const bool silu = is_silu(activation);
  at::Tensor x = x_in.stride(2) == 1 ? x_in : x_in.contiguous();
  at::Tensor w = weight.to(at::kFloat).contiguous();
  at::Tensor bi = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  if (bi.defined()) TORCH_CHECK(bi.numel() == C, op, ": bias must have ", C, " elements");
  at::Tensor ini;
  if (initial_states.has_value()) {
    TORCH_CHECK(initial_states->sizes() == at::IntArrayRef({B, C, W - 1}), op, ": initial_states must be (", B, ", ",
                C, ", ", W - 1, ")");
    ini = initial_states->to(x.scalar_type()).contiguous();  // rounded to x's dtype, as the reference does
  }
  at::Tensor y = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  at::Tensor fs;
  if (final_states.has_value()) {
    TORCH_CHECK(final_states->sizes() == at::IntArrayRef({B, C, W - 1}) &&
                    final_states->scalar_type() == x.scalar_type(), op, ": final_states must be (", B, ", ", C, ", ",
                W - 1, ") of x's dtype");
    fs = final_states->is_contiguous() ? *final_states : at::empty(final_states->sizes(), final_states->options());
  }
  if (B * C > 0) {
    LIVEACT_DISPATCH_FLOAT(x.scalar_type(), op, [&] {
      dwconv_rows<scalar_t>(cptr<scalar_t>(x), x.stride(0), x.stride(1), ini.defined() ? cptr<scalar_t>(ini) : nullptr,
                            w.const_data_ptr<float>(), bi.defined() ? bi.const_data_ptr<float>() : nullptr,
                            ptr<scalar_t>(y), fs.defined() ? ptr<scalar_t>(fs) : nullptr, B, C, L, W, stride, Lo, silu);
    });
  }
  if (!out.is_same(y)) out.copy_(y);
  if (fs.defined() && !final_states->is_same(fs)) final_states->copy_(fs);
}

// Per row: buf = [state (S) | x cast to the state dtype (L)]; step i's window is buf[i+1+S-W, i+1+S);
// the new state is buf[L, L+S).
template <typename T, typename TS>
void update_rows(const T* x, int64_t sxB, int64_t sxC, int64_t sxL, TS* st, int64_t ssB, int64_t ssC, int64_t ssL,
                 const float* w, const float* bias, T* out, int64_t B, int64_t C, int64_t L, int64_t S, int64_t W,
                 bool silu) {
  at::parallel_for(0, B * C, row_grain((S + L) * int64_t(sizeof(T))), [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(S + L);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / C, c = r % C;
      TS* sr = st + b * ssB + c * ssC;
      const T* xr = x + b * sxB + c * sxC;
      for (int64_t i = 0; i < S; ++i) buf[i] = to_float(sr[i * ssL]);
      for (int64_t i = 0; i < L; ++i) buf[S + i] = to_float(from_float<TS>(to_float(xr[i * sxL])));
      const float* wr = w + c * W;
      const float bv = bias ? bias[c] : 0.f;
      T* o = out + r * L;
      for (int64_t i = 0; i < L; ++i) {
        const float* win = buf.data() + i + 1 + S - W;
        float acc = 0.f;
        for (int64_t k = 0; k < W; ++k) acc = dwconv_tap(acc, wr[k], win[k]);
        o[i] = from_float<T>(dwconv_activation(acc + bv, silu));
      }
      for (int64_t i = 0; i < S; ++i) sr[i * ssL] = from_float<TS>(buf[L + i]);
    }
  });
}

void causal_dwconv1d_update_fwd_cpu(const at::Tensor& x, at::Tensor& conv_state, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, c10::optional<c10::string_view> activation,
                                    at::Tensor& out) {
  const char* op = "causal_dwconv1d_update_fwd";
  TORCH_CHECK(x.dim() == 3, op, ": x must be (B, C, L), got ", x.sizes());
  const int64_t B = x.size(0), C = x.size(1), L = x.size(2);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == C, op, ": weight must be (C, W)");
  const int64_t W = weight.size(1);
  TORCH_CHECK(conv_state.dim() == 3 && conv_state.size(0) == B && conv_state.size(1) == C &&
                  conv_state.size(2) >= W - 1, op, ": conv_state must be (B, C, >= W-1)");
  const int64_t S = conv_state.size(2);
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() && out.is_contiguous(), op,
              ": out must be contiguous, shaped like x");
  const bool silu = is_silu(activation);
  at::Tensor w = weight.to(at::kFloat).contiguous();
  at::Tensor bi = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  if (B * C == 0 || L == 0) return;
  LIVEACT_DISPATCH_FLOAT(conv_state.scalar_type(), op, [&] {
    using state_t = scalar_t;
    LIVEACT_DISPATCH_FLOAT(x.scalar_type(), op, [&] {
      update_rows<scalar_t, state_t>(cptr<scalar_t>(x), x.stride(0), x.stride(1), x.stride(2), ptr<state_t>(conv_state),
                                     conv_state.stride(0), conv_state.stride(1), conv_state.stride(2),
                                     w.const_data_ptr<float>(), bi.defined() ? bi.const_data_ptr<float>() : nullptr,
                                     ptr<scalar_t>(out), B, C, L, S, W, silu);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CPU, m) {
  m.impl("causal_dwconv1d_fwd", &causal_dwconv1d_fwd_cpu);
  m.impl("causal_dwconv1d_update_fwd", &causal_dwconv1d_update_fwd_cpu);
}

}  // namespace liveact
