// C++ CPU kernels of the ConvKV family: the compression (OpenMP over output tokens, vectorised over
// channels) and the in-place 14-slot cache update with optional FP8 (per token and head) storage.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/cpu_utils.h"
#include "convkv/convkv_math.h"

namespace liveact {
namespace {

constexpr int64_t kChunk = 256;  // channels accumulated in registers/L1 at a time

// ------------------------------------------------------------------------------------------- compress
template <typename T>
void compress_rows(const T* x, const float* wt, T* out, int64_t B, int64_t M, int64_t H, int64_t Dh, int64_t sB,
                   int64_t sN, int64_t sH, int32_t group, bool frame_mode, int64_t fl) {
  const int64_t C = H * Dh;
  at::parallel_for(0, B * M, row_grain(C * group * int64_t(sizeof(T))), [&](int64_t r0, int64_t r1) {
    alignas(64) float acc[kChunk];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / M, t = r % M;
      T* o = out + r * C;
      for (int64_t hh = 0; hh < H; ++hh) {
        for (int64_t d0 = 0; d0 < Dh; d0 += kChunk) {
          const int64_t n = std::min(kChunk, Dh - d0);
          for (int64_t i = 0; i < n; ++i) acc[i] = 0.f;
          for (int32_t j = 0; j < group; ++j) {
            const T* xs = x + b * sB + convkv_src_token(t, j, group, frame_mode, fl) * sN + hh * sH + d0;
            const float* wj = wt + int64_t(j) * C + hh * Dh + d0;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) acc[i] = convkv_tap(acc[i], wj[i], to_float(xs[i]));
          }
          T* od = o + hh * Dh + d0;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) od[i] = from_float<T>(acc[i]);
        }
      }
    }
  });
}

at::Tensor transposed_weight(const at::Tensor& weight, int64_t C, int64_t group, const char* op) {
  TORCH_CHECK(weight.numel() == C * group, op, ": weight must have ", C, "x", group, " elements, got ",
              weight.sizes());
  return weight.reshape({C, group}).to(at::kFloat).t().contiguous();  // (group, C)
}

void convkv_compress_fwd_cpu(const at::Tensor& x_in, const at::Tensor& weight, int64_t group, c10::string_view mode,
                             int64_t frame_len, at::Tensor& out) {
  TORCH_CHECK(x_in.dim() == 4, "convkv_compress_fwd: x must be (B, N, H, Dh), got ", x_in.sizes());
  TORCH_CHECK(group >= 1 && x_in.size(1) % group == 0, "convkv_compress_fwd: token count ", x_in.size(1),
              " is not a multiple of group ", group);
  TORCH_CHECK(mode == "token" || mode == "frame", "convkv_compress_fwd: mode must be 'token' or 'frame'");
  const bool frame_mode = mode == "frame";
  const int64_t B = x_in.size(0), N = x_in.size(1), H = x_in.size(2), Dh = x_in.size(3), M = N / group;
  if (frame_mode) TORCH_CHECK(frame_len >= 1 && N % (group * frame_len) == 0,
                              "convkv_compress_fwd: mode='frame' needs N % (group*frame_len) == 0");
  TORCH_CHECK(out.dim() == 4 && out.size(0) == B && out.size(1) == M && out.size(2) == H && out.size(3) == Dh &&
                  out.scalar_type() == x_in.scalar_type(),
              "convkv_compress_fwd: out must be (", B, ", ", M, ", ", H, ", ", Dh, ") of x's dtype, got ", out.sizes());
  at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  at::Tensor wt = transposed_weight(weight, H * Dh, group, "convkv_compress_fwd");
  at::Tensor y = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  if (y.numel()) {
    LIVEACT_DISPATCH_FLOAT(x.scalar_type(), "convkv_compress_fwd", [&] {
      compress_rows<scalar_t>(cptr<scalar_t>(x), wt.const_data_ptr<float>(), ptr<scalar_t>(y), B, M, H, Dh,
                              x.stride(0), x.stride(1), x.stride(2), int32_t(group), frame_mode, frame_len);
    });
  }
  if (!out.is_same(y)) out.copy_(y);
}

// --------------------------------------------------------------------------------------- cache update
// One token row of a cache: H heads of Dh channels, with one fp32 scale per head when TC is FP8.
template <typename TC>
struct CacheRows {
  TC* data;       // (B, S*fl, H, Dh) contiguous
  float* scale;   // (B, S*fl, H) contiguous, or nullptr
  int64_t tokens, H, Dh;
  TC* row(int64_t b, int64_t tok) const { return data + (b * tokens + tok) * H * Dh; }
  float* srow(int64_t b, int64_t tok) const { return scale ? scale + (b * tokens + tok) * H : nullptr; }
};

template <typename TC>
inline float load_elem(const TC* r, int64_t i, float) { return to_float(r[i]); }
inline float load_elem(const fp8e4m3_t* r, int64_t i, float s) { return fp8_dequantize(r[i].bits, s); }

// Writes one fp32 row (H*Dh) into the cache: rounded for float caches, quantised per head for FP8.
template <typename TC>
inline void store_row(const float* v, TC* dst, float* sdst, int64_t H, int64_t Dh) {
  (void)sdst;
#pragma omp simd
  for (int64_t i = 0; i < H * Dh; ++i) dst[i] = from_float<TC>(v[i]);
}
template <>
inline void store_row<fp8e4m3_t>(const float* v, fp8e4m3_t* dst, float* sdst, int64_t H, int64_t Dh) {
  for (int64_t hh = 0; hh < H; ++hh) {
    const float* vh = v + hh * Dh;
    float amax = 0.f;
#pragma omp simd reduction(max : amax)
    for (int64_t i = 0; i < Dh; ++i) amax = std::max(amax, fp8_abs_finite(vh[i]));
    const float s = fp8_scale_from_amax(amax);
    sdst[hh] = s;
    fp8e4m3_t* dh = dst + hh * Dh;
#pragma omp simd
    for (int64_t i = 0; i < Dh; ++i) dh[i].bits = fp8_quantize(vh[i], s);
  }
}

// Compressed slot c: out token t <- sum_j w[:, j] * src token convkv_src_token(t, j), for t in [t0, t1).
template <typename TC>
void compress_slot(const CacheRows<TC>& cr, const float* wt, const ConvKVSlots& sl, int32_t c, bool frame_mode,
                   int64_t fl, int64_t B, int64_t t0, int64_t t1) {
  const int64_t C = cr.H * cr.Dh, n = t1 - t0;
  if (n <= 0) return;
  const int64_t src0 = int64_t(sl.compressed_src(c)) * fl, dst0 = int64_t(sl.compressed_dst(c)) * fl;
  at::parallel_for(0, B * n, row_grain(C * sl.group * int64_t(sizeof(TC))), [&](int64_t r0, int64_t r1) {
    std::vector<float> acc(C);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / n, t = t0 + r % n;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int32_t j = 0; j < sl.group; ++j) {
        const int64_t tok = src0 + convkv_src_token(t, j, sl.group, frame_mode, fl);
        const TC* xs = cr.row(b, tok);
        const float* ss = cr.srow(b, tok);
        const float* wj = wt + int64_t(j) * C;
        for (int64_t hh = 0; hh < cr.H; ++hh) {
          const float s = ss ? ss[hh] : 1.f;
          float* a = acc.data() + hh * cr.Dh;
          const TC* xh = xs + hh * cr.Dh;
          const float* wh = wj + hh * cr.Dh;
#pragma omp simd
          for (int64_t i = 0; i < cr.Dh; ++i) a[i] = convkv_tap(a[i], wh[i], load_elem(xh, i, s));
        }
      }
      store_row<TC>(acc.data(), cr.row(b, dst0 + t), cr.srow(b, dst0 + t), cr.H, cr.Dh);
    }
  });
}

// Writes the new block (B, rows, H, Dh) at token offset dst0 of the cache (cast, or quantised for FP8).
template <typename TC, typename TN>
void write_new(const CacheRows<TC>& cr, const TN* src, int64_t rows, int64_t dst0, int64_t B) {
  const int64_t C = cr.H * cr.Dh;
  at::parallel_for(0, B * rows, row_grain(C * int64_t(sizeof(TN))), [&](int64_t r0, int64_t r1) {
    std::vector<float> v(C);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / rows, t = r % rows;
      const TN* s = src + r * C;
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) v[i] = to_float(s[i]);
      store_row<TC>(v.data(), cr.row(b, dst0 + t), cr.srow(b, dst0 + t), cr.H, cr.Dh);
    }
  });
}

template <typename TC, typename TN>
void cache_update(const CacheRows<TC>& cr, const TN* src, const float* wt, const ConvKVSlots& sl, bool frame_mode,
                  int64_t fl, int64_t B, int64_t block) {
  const int64_t C = cr.H * cr.Dh;
  if (block == 0) {  // block 0: sinks + compressed + recent frames into slots 0..
    write_new<TC, TN>(cr, src, int64_t(sl.new_dst()) * fl, 0, B);
    return;
  }
  if (block >= 2) {
    // Phase A: compressed slot 0 is written over its own sources. In token mode output t reads tokens
    // [g*t, g*t + g) and writes token t, so batches [g^k, g^(k+1)) of outputs only read tokens no batch has
    // written yet and only overwrite tokens that earlier batches have consumed; in frame mode output t
    // reads token t of its own slot only (before writing it), so one batch is safe.
    if (frame_mode) {
      compress_slot<TC>(cr, wt, sl, 0, true, fl, B, 0, fl);
    } else {
      compress_slot<TC>(cr, wt, sl, 0, false, fl, B, 0, std::min<int64_t>(1, fl));
      for (int64_t a = 1; a < fl; a *= sl.group) compress_slot<TC>(cr, wt, sl, 0, false, fl, B, a, std::min(fl, a * sl.group));
    }
    // Phase B: the other compressed slots and the recent copies read slots >= sinks + group and write slots
    // < sinks + compressed + recent <= sinks + group (checked by the wrapper): no overlap.
    for (int32_t c = 1; c < sl.compressed; ++c) compress_slot<TC>(cr, wt, sl, c, frame_mode, fl, B, 0, fl);
    if (sl.recent > 0) {
      const int64_t rows = int64_t(sl.recent) * fl;
      const int64_t s0 = int64_t(sl.recent_src(0)) * fl, d0 = int64_t(sl.recent_dst(0)) * fl;
      at::parallel_for(0, B * rows, row_grain(C * int64_t(sizeof(TC))), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b = r / rows, t = r % rows;
          std::memcpy(cr.row(b, d0 + t), cr.row(b, s0 + t), size_t(C) * sizeof(TC));  // exact: FP8 bytes + scales
          if (cr.scale) std::memcpy(cr.srow(b, d0 + t), cr.srow(b, s0 + t), size_t(cr.H) * sizeof(float));
        }
      });
    }
  }
  // Phase C (blocks >= 1): the new block into the last new_frames slots, after every read above.
  write_new<TC, TN>(cr, src, int64_t(sl.new_frames()) * fl, int64_t(sl.new_dst()) * fl, B);
}

void convkv_cache_update_fwd_cpu(at::Tensor& cache_k, at::Tensor& cache_v, const at::Tensor& new_k,
                                 const at::Tensor& new_v, const at::Tensor& weight_k, const at::Tensor& weight_v,
                                 const c10::optional<at::Tensor>& k_scale, const c10::optional<at::Tensor>& v_scale,
                                 int64_t frame_len, int64_t group, c10::string_view mode, int64_t sinks,
                                 int64_t compressed, int64_t recent, int64_t block) {
  const char* op = "convkv_cache_update_fwd";
  TORCH_CHECK(mode == "token" || mode == "frame", op, ": mode must be 'token' or 'frame'");
  const ConvKVSlots sl{int32_t(sinks), int32_t(compressed), int32_t(recent), int32_t(group)};
  TORCH_CHECK(group >= 2 && compressed >= 1 && sinks >= 0 && recent >= 0 && compressed + recent <= group, op,
              ": needs group >= 2, compressed >= 1, compressed + recent <= group");
  TORCH_CHECK(block >= 0, op, ": block must be >= 0");
  const bool fp8 = cache_k.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK(cache_v.scalar_type() == cache_k.scalar_type() && new_v.scalar_type() == new_k.scalar_type(), op,
              ": cache_k/cache_v and new_k/new_v must share dtypes");
  TORCH_CHECK(fp8 || cache_k.scalar_type() == new_k.scalar_type(), op, ": a float cache must have new_k's dtype");
  TORCH_CHECK(cache_k.dim() == 4 && cache_k.is_contiguous() && cache_v.is_contiguous() &&
                  cache_v.sizes() == cache_k.sizes(), op, ": caches must be contiguous (B, S*fl, H, Dh) and alike");
  const int64_t B = cache_k.size(0), H = cache_k.size(2), Dh = cache_k.size(3), fl = frame_len;
  TORCH_CHECK(cache_k.size(1) == int64_t(sl.total()) * fl, op, ": cache must hold ", sl.total(), " slots of ", fl,
              " tokens, got ", cache_k.size(1));
  const int64_t n_new = (block == 0 ? sl.new_dst() : sl.new_frames()) * fl;
  TORCH_CHECK(new_k.sizes() == at::IntArrayRef({B, n_new, H, Dh}) && new_v.sizes() == new_k.sizes(), op,
              ": new_k/new_v must be (", B, ", ", n_new, ", ", H, ", ", Dh, "), got ", new_k.sizes());
  if (fp8) {
    TORCH_CHECK(k_scale.has_value() && v_scale.has_value(), op, ": FP8 caches need k_scale and v_scale");
    for (const at::Tensor* s : {&*k_scale, &*v_scale})
      TORCH_CHECK(s->scalar_type() == at::kFloat && s->is_contiguous() && s->numel() == B * cache_k.size(1) * H, op,
                  ": scales must be contiguous float32 (B, S*fl, H, 1)");
  }
  at::Tensor wk = block >= 2 ? transposed_weight(weight_k, H * Dh, group, op) : at::Tensor();
  at::Tensor wv = block >= 2 ? transposed_weight(weight_v, H * Dh, group, op) : at::Tensor();
  at::Tensor nk = new_k.contiguous(), nv = new_v.contiguous();
  const bool frame_mode = mode == "frame";
  if (B == 0 || H * Dh == 0 || fl == 0) return;
  auto run = [&](auto tc_tag, auto tn_tag) {
    using TC = decltype(tc_tag);
    using TN = decltype(tn_tag);
    CacheRows<TC> ck{ptr<TC>(cache_k), fp8 ? ptr<float>(*k_scale) : nullptr, cache_k.size(1), H, Dh};
    CacheRows<TC> cv{ptr<TC>(cache_v), fp8 ? ptr<float>(*v_scale) : nullptr, cache_v.size(1), H, Dh};
    cache_update<TC, TN>(ck, cptr<TN>(nk), wk.defined() ? wk.const_data_ptr<float>() : nullptr, sl, frame_mode, fl,
                         B, block);
    cache_update<TC, TN>(cv, cptr<TN>(nv), wv.defined() ? wv.const_data_ptr<float>() : nullptr, sl, frame_mode, fl,
                         B, block);
  };
  LIVEACT_DISPATCH_FLOAT(nk.scalar_type(), op, [&] {
    if (fp8) run(fp8e4m3_t{}, scalar_t{});
    else run(scalar_t{}, scalar_t{});
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CPU, m) {
  m.impl("convkv_compress_fwd", &convkv_compress_fwd_cpu);
  m.impl("convkv_cache_update_fwd", &convkv_cache_update_fwd_cpu);
}

}  // namespace liveact
