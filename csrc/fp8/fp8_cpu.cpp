// C++ CPU kernels of the FP8 family: quantize / dequantize (OpenMP over groups; AVX-512 forms of the shared
// fp8_math.h / numeric.h conversions, scalar tails through them) and the W8A8 linear (fp8 -> bf16 packing, exact,
// then an AMX bf16 GEMM with fp32 accumulation and a fused scale/bias/cast epilogue).
#include "common/cpu_utils.h"
#include "fp8/fp8_math.h"

#include <algorithm>
#include <memory>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define LIVEACT_FP8_AVX512 1
#else
#define LIVEACT_FP8_AVX512 0
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define LIVEACT_FP8_AMX 1
#else
#define LIVEACT_FP8_AMX 0
#endif

namespace liveact {
namespace {

// Groups at least this large are split across threads (the "tensor" granularity, long token rows).
constexpr int64_t kBigGroup = int64_t(1) << 16;
constexpr int64_t kChunk = int64_t(1) << 15;

#if LIVEACT_FP8_AVX512
// AVX-512 forms of fp8_math.h / numeric.h, operation for operation the same integer algorithm (so the same
// bits; tests/test_fp8.py checks them against torch). gcc vectorises the scalar functions too, but narrows
// to bytes early and spends most of the time in vpermt2w/b shuffles (measured 0.9 GB/s vs 3.2 GB/s copy).
inline __m512 load16(const float* x) { return _mm512_loadu_ps(x); }
inline __m512 load16(const bf16_t* x) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline __m512 load16(const fp16_t* x) {  // vcvtph2ps is exact for every fp16 (subnormals, inf, NaN)
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
}

// float_to_fp8e4m3 on 16 lanes -> 16 bytes.
inline __m128i fp8_from_float16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80));
  const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  __m512i r = _mm512_add_epi32(a, _mm512_set1_epi32(0x7ffff));
  r = _mm512_add_epi32(r, _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1)));
  r = _mm512_sub_epi32(_mm512_srli_epi32(r, 20), _mm512_set1_epi32(120 << 3));
  r = _mm512_min_epu32(r, _mm512_set1_epi32(0x7e));
  const __m512 sf = _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(16384.0f));
  const __m512i sub = _mm512_sub_epi32(_mm512_castps_si512(sf), _mm512_set1_epi32(0x46800000));
  __m512i out = _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x3c800000)), r, sub);
  out = _mm512_mask_blend_epi32(_mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7f800000)), out,
                                _mm512_set1_epi32(0x7f));
  return _mm512_cvtepi32_epi8(_mm512_or_si512(out, sign));
}

// fp8e4m3_to_float on 16 bytes -> 16 lanes.
inline __m512 fp8_to_float16(__m128i b) {
  const __m512i v = _mm512_cvtepu8_epi32(b);
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x80)), 24);
  const __m512i mag = _mm512_and_si512(v, _mm512_set1_epi32(0x7f));
  const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 20), _mm512_set1_epi32(120 << 23));
  const __m512 subf = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(mag, _mm512_set1_epi32(7))),
                                    _mm512_set1_ps(0.001953125f));
  __m512i bits = _mm512_mask_blend_epi32(_mm512_cmpge_epu32_mask(mag, _mm512_set1_epi32(8)),
                                         _mm512_castps_si512(subf), normal);
  bits = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)), bits,
                                 _mm512_set1_epi32(0x7fc00000));
  return _mm512_castsi512_ps(_mm512_or_si512(bits, sign));
}

inline void store16(float* o, __m512 v) { _mm512_storeu_ps(o, v); }
inline void store16(bf16_t* o, __m512 v) {  // float_to_bf16: RNE by an integer add, quiet NaN
  const __m512i u = _mm512_castps_si512(v);
  __m512i r = _mm512_add_epi32(u, _mm512_set1_epi32(0x7fff));
  r = _mm512_srli_epi32(_mm512_add_epi32(r, _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))), 16);
  const __m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, r, nan)));
}
inline void store16(fp16_t* o, __m512 v) {  // float_to_fp16 (scalar path) on 16 lanes
  const __m512i u = _mm512_castps_si512(v);
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000));
  const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  __m512i r = _mm512_add_epi32(a, _mm512_set1_epi32(0xfff - (112 << 23)));
  r = _mm512_add_epi32(r, _mm512_and_si512(_mm512_srli_epi32(a, 13), _mm512_set1_epi32(1)));
  r = _mm512_min_epu32(_mm512_srli_epi32(r, 13), _mm512_set1_epi32(0x7c00));
  const __m512 sf = _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(0.5f));
  const __m512i sub = _mm512_sub_epi32(_mm512_castps_si512(sf), _mm512_set1_epi32(0x3f000000));
  __m512i out = _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x38800000)), r, sub);
  out = _mm512_mask_blend_epi32(_mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7f800000)), out,
                                _mm512_set1_epi32(0x7e00));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm512_cvtepi32_epi16(_mm512_or_si512(out, sign)));
}
#endif  // LIVEACT_FP8_AVX512

template <typename T>
inline float amax_finite(const T* x, int64_t n) {
  float m = 0.f;
  int64_t i = 0;
#if LIVEACT_FP8_AVX512
  __m512 vm = _mm512_setzero_ps();
  const __m512 big = _mm512_set1_ps(3.40282346638528859812e+38f);
  for (; i + 16 <= n; i += 16) {
    const __m512 a = _mm512_abs_ps(load16(x + i));
    vm = _mm512_mask_max_ps(vm, _mm512_cmp_ps_mask(a, big, _CMP_LE_OQ), vm, a);  // skips NaN and inf
  }
  m = _mm512_reduce_max_ps(vm);
#endif
  for (; i < n; ++i) m = fp8_max(m, fp8_finite_abs(to_float(x[i])));
  return m;
}

template <typename T>
inline void quantize_span(const T* x, int64_t n, float s, uint8_t* q) {
  int64_t i = 0;
#if LIVEACT_FP8_AVX512
  const __m512 vs = _mm512_set1_ps(s);
  for (; i + 16 <= n; i += 16)  // a true division, as fp8_quantize
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), fp8_from_float16(_mm512_div_ps(load16(x + i), vs)));
#endif
  for (; i < n; ++i) q[i] = fp8_quantize(to_float(x[i]), s);
}

template <typename T>
void quantize_groups(const T* x, int64_t groups, int64_t gs, uint8_t* q, float* scale) {
  if (gs < kBigGroup) {  // one group per task step: the row stays in L1 between the amax and the quantise pass
    at::parallel_for(0, groups, row_grain(gs * int64_t(sizeof(T))), [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const float s = fp8_scale_from_amax(amax_finite(x + g * gs, gs));
        scale[g] = s;
        quantize_span(x + g * gs, gs, s, q + g * gs);
      }
    });
    return;
  }
  for (int64_t g = 0; g < groups; ++g) {  // few, large groups: split each one across threads
    const T* xg = x + g * gs;
    const float amax = at::parallel_reduce(
        int64_t(0), gs, kChunk, 0.f,
        [&](int64_t i0, int64_t i1, float acc) { return fp8_max(acc, amax_finite(xg + i0, i1 - i0)); },
        [](float a, float b) { return fp8_max(a, b); });
    const float s = fp8_scale_from_amax(amax);
    scale[g] = s;
    at::parallel_for(0, gs, kChunk, [&](int64_t i0, int64_t i1) { quantize_span(xg + i0, i1 - i0, s, q + g * gs + i0); });
  }
}

void quantize_fp8_fwd_cpu(const at::Tensor& x_in, int64_t group_size, at::Tensor& q, at::Tensor& scale) {
  TORCH_CHECK(q.scalar_type() == at::kFloat8_e4m3fn && q.is_contiguous() && q.numel() == x_in.numel(),
              "quantize_fp8_fwd: q must be a contiguous float8_e4m3fn tensor with x's ", x_in.numel(), " elements");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous(),
              "quantize_fp8_fwd: scale must be a contiguous float32 tensor");
  TORCH_CHECK(group_size >= 0, "quantize_fp8_fwd: group_size must be >= 0, got ", group_size);
  const int64_t n = x_in.numel();
  if (group_size == 0) {  // empty groups (a zero-size last dim): amax 0, so the minimum scale
    TORCH_CHECK(n == 0, "quantize_fp8_fwd: group_size 0 needs an empty x");
    scale.fill_(double(kFp8MinScale));
    return;
  }
  TORCH_CHECK(n % group_size == 0, "quantize_fp8_fwd: group_size ", group_size, " does not divide x.numel() ", n);
  const int64_t groups = n / group_size;
  TORCH_CHECK(scale.numel() == groups, "quantize_fp8_fwd: scale must have ", groups, " elements, got ", scale.numel());
  if (n == 0) return;
  at::Tensor x = x_in.contiguous();
  LIVEACT_DISPATCH_FLOAT(x.scalar_type(), "quantize_fp8_fwd", [&] {
    quantize_groups<scalar_t>(cptr<scalar_t>(x), groups, group_size, ptr<uint8_t>(q), ptr<float>(scale));
  });
}

template <typename T>
void dequantize_flat(const uint8_t* q, const float* scale, int64_t gs, int64_t n, T* out) {
  at::parallel_for(0, n, kChunk, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
    while (i < i1) {  // segments of one group each
      const int64_t g = i / gs;
      const int64_t end = std::min(i1, (g + 1) * gs);
      const float s = scale[g];
      int64_t j = i;
#if LIVEACT_FP8_AVX512
      const __m512 vs = _mm512_set1_ps(s);
      for (; j + 16 <= end; j += 16)
        store16(out + j, _mm512_mul_ps(fp8_to_float16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + j))), vs));
#endif
      for (; j < end; ++j) out[j] = from_float<T>(fp8_dequantize(q[j], s));
      i = end;
    }
  });
}

void dequantize_fp8_fwd_cpu(const at::Tensor& q_in, const at::Tensor& scale_in, int64_t group_size, at::Tensor& out) {
  TORCH_CHECK(q_in.scalar_type() == at::kFloat8_e4m3fn, "dequantize_fp8_fwd: q must be float8_e4m3fn");
  TORCH_CHECK(scale_in.scalar_type() == at::kFloat, "dequantize_fp8_fwd: scale must be float32");
  TORCH_CHECK(out.is_contiguous() && out.numel() == q_in.numel(),
              "dequantize_fp8_fwd: out must be contiguous with q's ", q_in.numel(), " elements");
  const int64_t n = q_in.numel();
  if (n == 0) return;
  TORCH_CHECK(group_size > 0 && n % group_size == 0 && scale_in.numel() == n / group_size,
              "dequantize_fp8_fwd: group_size ", group_size, " and scale (", scale_in.numel(),
              " elements) do not tile q (", n, " elements)");
  at::Tensor q = q_in.contiguous(), scale = scale_in.contiguous();
  LIVEACT_DISPATCH_FLOAT(out.scalar_type(), "dequantize_fp8_fwd", [&] {
    dequantize_flat<scalar_t>(cptr<uint8_t>(q), cptr<float>(scale), group_size, n, ptr<scalar_t>(out));
  });
}

// ------------------------------------------------------------------------------------------ fp8 linear
inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// out[m, n] = cast((acc[m, n] * xs[m]) * ws[n] + bias[n]): the reference's order of operations.
template <typename T>
inline void epilogue_row(const float* acc, int64_t n, float xs, const float* ws, const float* bias, T* out) {
  if (bias) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] = from_float<T>(acc[j] * xs * ws[j] + bias[j]);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] = from_float<T>(acc[j] * xs * ws[j]);
  }
}

// fp8 row -> bf16 row (exact), zero padded from n to np.
inline void fp8_row_to_bf16(const uint8_t* src, int64_t n, int64_t np, uint16_t* dst) {
  int64_t k = 0;
#if LIVEACT_FP8_AVX512
  for (; k + 16 <= n; k += 16) {  // exact: the low 16 bits of an e4m3 value's fp32 bits are zero
    const __m512i f = _mm512_castps_si512(fp8_to_float16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), _mm512_cvtepi32_epi16(_mm512_srli_epi32(f, 16)));
  }
#endif
  for (; k < n; ++k) dst[k] = fp8e4m3_to_bf16_bits(src[k]);
  for (int64_t k = n; k < np; ++k) dst[k] = 0;
}

#if LIVEACT_FP8_AMX
// Linux hands out AMX tile state only on request (once per process).
bool amx_available() {
  static const bool ok = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette_id = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Blocking: a task computes an MC x NC block of out over K in KC chunks; its A panel (MC x KC bf16, 256 KiB),
// B slab (NC x KC, 256 KiB) and fp32 accumulators (MC x NC, 256 KiB) stay in L2 (2 MiB per core).
constexpr int64_t kMC = 256, kNC = 256, kKC = 512;

// Row strides of the A panel and the accumulators: 64 bytes more than a multiple of 1 KiB, so that the
// 16 rows of a tile load do not all fall into the same L1 sets (4 KiB aliasing at K = 2048, 4096, ...).
inline int64_t padded_lda(int64_t Kp) { return (Kp * 2) % 1024 == 0 ? Kp + 32 : Kp; }
constexpr int64_t kLdc = kNC + 16;

// A: (Mp, lda) bf16 row-major (lda = padded_lda(Kp)); B: (Np / 16, Kp / 2, 16, 2) bf16, the VNNI layout of
// W^T that tdpbf16ps reads.
template <typename T>
void amx_gemm(const uint16_t* A, const uint16_t* B, int64_t M, int64_t N, int64_t Mp, int64_t Np, int64_t Kp,
              const float* xs, const float* ws, const float* bias, T* out) {
  const int64_t lda = padded_lda(Kp);
  const int64_t mblocks = (Mp + kMC - 1) / kMC, nblocks = (Np + kNC - 1) / kNC;
  at::parallel_for(0, mblocks * nblocks, 1, [&](int64_t t0, int64_t t1) {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
    std::vector<float> cbuf(kMC * kLdc);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t mb0 = (t / nblocks) * kMC, nb0 = (t % nblocks) * kNC;
      const int64_t mc = std::min(kMC, Mp - mb0), nc = std::min(kNC, Np - nb0);
      float* C = cbuf.data();
      for (int64_t k0 = 0; k0 < Kp; k0 += kKC) {
        const int64_t k1 = std::min(Kp, k0 + kKC);
        for (int64_t n = 0; n < nc; n += 32) {
          const uint16_t* b0 = B + ((nb0 + n) / 16) * (Kp / 2) * 32;
          const uint16_t* b1 = b0 + (Kp / 2) * 32;
          for (int64_t m = 0; m < mc; m += 32) {
            float* c = C + m * kLdc + n;
            if (k0 == 0) {
              _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            } else {
              _tile_loadd(0, c, kLdc * 4); _tile_loadd(1, c + 16, kLdc * 4);
              _tile_loadd(2, c + 16 * kLdc, kLdc * 4); _tile_loadd(3, c + 16 * kLdc + 16, kLdc * 4);
            }
            const uint16_t* a = A + (mb0 + m) * lda;
            for (int64_t k = k0; k < k1; k += 32) {
              _tile_loadd(4, a + k, lda * 2);
              _tile_loadd(5, a + 16 * lda + k, lda * 2);
              _tile_loadd(6, b0 + (k / 2) * 32, 64);
              _tile_loadd(7, b1 + (k / 2) * 32, 64);
              _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
              _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
            }
            _tile_stored(0, c, kLdc * 4); _tile_stored(1, c + 16, kLdc * 4);
            _tile_stored(2, c + 16 * kLdc, kLdc * 4); _tile_stored(3, c + 16 * kLdc + 16, kLdc * 4);
          }
        }
      }
      const int64_t m_end = std::min(M, mb0 + mc), n_cnt = std::min(N, nb0 + nc) - nb0;
      for (int64_t m = mb0; m < m_end; ++m)
        epilogue_row(C + (m - mb0) * kLdc, n_cnt, xs[m], ws + nb0, bias ? bias + nb0 : nullptr, out + m * N + nb0);
    }
    _tile_release();
  });
}

template <typename T>
void fp8_linear_amx(const uint8_t* xq, const float* xs, const uint8_t* wq, const float* ws, const float* bias,
                    int64_t M, int64_t N, int64_t K, T* out) {
  const int64_t Mp = round_up(M, 32), Np = round_up(N, 32), Kp = round_up(K, 32);
  // Uninitialised (every element is written below); std::vector would zero 2 x the operands first.
  const int64_t lda = padded_lda(Kp);
  std::unique_ptr<uint16_t[]> A(new uint16_t[Mp * lda]), B(new uint16_t[Np * Kp]);
  at::parallel_for(0, Mp, row_grain(Kp * 2), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (r < M) fp8_row_to_bf16(xq + r * K, K, Kp, A.get() + r * lda);
      else std::fill_n(A.get() + r * lda, Kp, uint16_t(0));
    }
  });
  // B: 16 weight rows at a time are converted, then interleaved to (Kp / 2, 16 rows, 2).
  at::parallel_for(0, Np / 16, 1, [&](int64_t t0, int64_t t1) {
    std::vector<uint16_t> rows(16 * Kp);
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t j = 0; j < 16; ++j) {
        const int64_t n = t * 16 + j;
        if (n < N) fp8_row_to_bf16(wq + n * K, K, Kp, rows.data() + j * Kp);
        else std::fill_n(rows.data() + j * Kp, Kp, uint16_t(0));
      }
      const uint32_t* src = reinterpret_cast<const uint32_t*>(rows.data());
      uint32_t* dst = reinterpret_cast<uint32_t*>(B.get() + t * Kp * 16);
      for (int64_t kp = 0; kp < Kp / 2; ++kp)
#pragma omp simd
        for (int64_t j = 0; j < 16; ++j) dst[kp * 16 + j] = src[j * (Kp / 2) + kp];
    }
  });
  amx_gemm<T>(A.get(), B.get(), M, N, Mp, Np, Kp, xs, ws, bias, out);
}
#endif  // LIVEACT_FP8_AMX

// Without AMX: fp8 -> fp32 (exact) and an fp32 GEMM (exact products, fp32 accumulation), then the epilogue.
template <typename T>
void fp8_linear_fp32(const at::Tensor& xq, const float* xs, const at::Tensor& wq, const float* ws, const float* bias,
                     int64_t M, int64_t N, int64_t K, T* out) {
  auto to_f32 = [](const at::Tensor& q) {
    at::Tensor f = at::empty(q.sizes(), q.options().dtype(at::kFloat));
    const uint8_t* s = cptr<uint8_t>(q);
    float* d = ptr<float>(f);
    at::parallel_for(0, q.numel(), kChunk, [&](int64_t i0, int64_t i1) {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) d[i] = fp8e4m3_to_float(s[i]);
    });
    return f;
  };
  at::Tensor acc = at::mm(to_f32(xq), to_f32(wq).t());
  const float* a = cptr<float>(acc);
  at::parallel_for(0, M, row_grain(N * 4), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) epilogue_row(a + m * N, N, xs[m], ws, bias, out + m * N);
  });
}

void fp8_linear_fwd_cpu(const at::Tensor& x_q_in, const at::Tensor& x_scale_in, const at::Tensor& w_q_in,
                        const at::Tensor& w_scale_in, const c10::optional<at::Tensor>& bias_in, at::Tensor& out) {
  TORCH_CHECK(x_q_in.dim() == 2 && w_q_in.dim() == 2, "fp8_linear_fwd: x_q (M, K) and w_q (N, K) must be 2-D");
  TORCH_CHECK(x_q_in.scalar_type() == at::kFloat8_e4m3fn && w_q_in.scalar_type() == at::kFloat8_e4m3fn,
              "fp8_linear_fwd: x_q and w_q must be float8_e4m3fn");
  const int64_t M = x_q_in.size(0), K = x_q_in.size(1), N = w_q_in.size(0);
  TORCH_CHECK(w_q_in.size(1) == K, "fp8_linear_fwd: w_q must be (N, ", K, "), got ", w_q_in.sizes());
  TORCH_CHECK(x_scale_in.scalar_type() == at::kFloat && x_scale_in.numel() == M,
              "fp8_linear_fwd: x_scale must be float32 with M=", M, " elements");
  TORCH_CHECK(w_scale_in.scalar_type() == at::kFloat && w_scale_in.numel() == N,
              "fp8_linear_fwd: w_scale must be float32 with N=", N, " elements");
  TORCH_CHECK(out.is_contiguous() && out.dim() == 2 && out.size(0) == M && out.size(1) == N,
              "fp8_linear_fwd: out must be contiguous (", M, ", ", N, ")");
  at::Tensor bias;
  if (bias_in.has_value()) {
    TORCH_CHECK(bias_in->scalar_type() == at::kFloat && bias_in->numel() == N,
                "fp8_linear_fwd: bias must be float32 with N=", N, " elements");
    bias = bias_in->contiguous();
  }
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: out = bias (or 0)
    if (bias.defined()) out.copy_(bias.unsqueeze(0).expand({M, N}));
    else out.zero_();
    return;
  }
  at::Tensor xq = x_q_in.contiguous(), wq = w_q_in.contiguous();
  at::Tensor xs = x_scale_in.contiguous(), ws = w_scale_in.contiguous();
  const float* bp = bias.defined() ? cptr<float>(bias) : nullptr;
  LIVEACT_DISPATCH_FLOAT(out.scalar_type(), "fp8_linear_fwd", [&] {
#if LIVEACT_FP8_AMX
    if (amx_available()) {
      fp8_linear_amx<scalar_t>(cptr<uint8_t>(xq), cptr<float>(xs), cptr<uint8_t>(wq), cptr<float>(ws), bp, M, N, K,
                               ptr<scalar_t>(out));
      return;
    }
#endif
    fp8_linear_fp32<scalar_t>(xq, cptr<float>(xs), wq, cptr<float>(ws), bp, M, N, K, ptr<scalar_t>(out));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CPU, m) {
  m.impl("quantize_fp8_fwd", &quantize_fp8_fwd_cpu);
  m.impl("dequantize_fp8_fwd", &dequantize_fp8_fwd_cpu);
  m.impl("fp8_linear_fwd", &fp8_linear_fwd_cpu);
}

}  // namespace liveact
