// C++ CPU kernels of attention (FP8 K/V, GQA, bottom-right causal, LSE) and audio cross-attention: flash-style
// tiles whose two GEMMs run on AMX / AVX-512 through ATen's brgemm, with the online softmax in fp32.
#include <ATen/native/CPUBlas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/cpu_utils.h"
#include "attention/attention_math.h"

namespace liveact {
namespace {

constexpr int64_t kKeyTile = 512;  // keys per tile: S [M, 512] fp32 and the K/V tiles stay in L2
constexpr int64_t kRowTile = 256;  // stacked query rows (queries x GQA group) per GEMM
constexpr int64_t kMaxSubTiles = 4;  // row sub-tiles per task
constexpr int64_t kAudioRowTile = 256;  // audio cross-attention: query rows per task

// GEMM element type per storage type; 16-bit types use the VNNI (pairs along K) layout for the B operand.
template <typename CT> struct GemmT;
template <> struct GemmT<float> { using type = float; static constexpr bool vnni = false; };
template <> struct GemmT<bf16_t> { using type = at::BFloat16; static constexpr bool vnni = true; };
// fp16 inputs compute in fp32 (exact widening): this CPU has no AMX-FP16, and ATen's fp16 brgemm fallback does
// not take the VNNI layout.
template <typename IO> struct ComputeT { using type = IO; };
template <> struct ComputeT<fp16_t> { using type = float; };

template <typename CT>
inline void brgemm(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, const CT* A,
                   const CT* B, float* C) {
  using G = GemmT<CT>;
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, false, reinterpret_cast<const typename G::type*>(A),
                              reinterpret_cast<const typename G::type*>(B), C, G::vnni);
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ------------------------------------------------------------------ conversions of rows into tile buffers
// dst[i] = src[i] * f as QT. A 64-byte aligned bf16 destination gets non-temporal stores: the output rows are
// written once and not read back by this kernel, so skipping the read-for-ownership saves a third of the traffic.
template <typename QT>
inline void store_row_scaled(const float* src, float f, QT* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<QT, bf16_t>) {
    const __m512 vf = _mm512_set1_ps(f);
    const bool nt = reinterpret_cast<uintptr_t>(dst) % 64 == 0;
    for (; i + 32 <= n; i += 32) {
      __m512bh r = _mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(src + i + 16), vf),
                                       _mm512_mul_ps(_mm512_loadu_ps(src + i), vf));
      if (nt)
        _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), reinterpret_cast<__m512i&>(r));
      else
        _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), reinterpret_cast<__m512i&>(r));
    }
  }
#endif
  for (; i < n; ++i) dst[i] = from_float<QT>(src[i] * f);
}

// One K/V row (n elements) of storage type KT into CT. fp8 rows are converted exactly to fp8 * 2^-8 (see
// attention_math.h; the 2^8 is folded into the per-key scales).
template <typename CT, typename KT>
inline void load_row(const KT* src, CT* dst, int64_t n) {
  if constexpr (std::is_same_v<CT, KT>) {
    std::memcpy(dst, src, n * sizeof(CT));
  } else if constexpr (std::is_same_v<KT, fp16_t>) {
    static_assert(std::is_same_v<CT, float>, "fp16 rows widen to fp32");
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#endif
    for (; i < n; ++i) dst[i] = to_float(src[i]);
  } else {
    static_assert(std::is_same_v<KT, fp8e4m3_t>, "K/V rows are CT or fp8");
    const uint8_t* s = reinterpret_cast<const uint8_t*>(src);
    int64_t i = 0;
#if defined(__AVX512BW__)
    const __m512i m80 = _mm512_set1_epi16(0x80), m7f = _mm512_set1_epi16(0x7f);
    for (; i + 32 <= n; i += 32) {
      __m512i b = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
      __m512i h = _mm512_or_si512(_mm512_slli_epi16(_mm512_and_si512(b, m80), 8),
                                  _mm512_slli_epi16(_mm512_and_si512(b, m7f), 7));  // fp16 bits of fp8 * 2^-8
      if constexpr (std::is_same_v<CT, fp16_t>) {
        _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), h);
      } else {
        __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
        __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
        if constexpr (std::is_same_v<CT, float>) {
          _mm512_storeu_ps(dst + i, lo);
          _mm512_storeu_ps(dst + i + 16, hi);
        } else {
#if defined(__AVX512BF16__)
          __m512bh r = _mm512_cvtne2ps_pbh(hi, lo);  // exact: fp8 values fit bf16
          _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), reinterpret_cast<__m512i&>(r));
#else
          alignas(64) float tmp[32];
          _mm512_store_ps(tmp, lo);
          _mm512_store_ps(tmp + 16, hi);
          for (int e = 0; e < 32; ++e) dst[i + e] = from_float<CT>(tmp[e]);
#endif
        }
      }
    }
#endif
    for (; i < n; ++i) dst[i] = from_float<CT>(fp16_to_float(fp8_to_fp16_shifted_bits(s[i])));
  }
}

// dst[c * dst_ld + r] = src[r * src_ld + c] for 32-bit words: K rows -> K^T (fp32), or, on pairs of 16-bit
// elements, K rows -> the VNNI layout [Dh/2][keys][2] that the QK^T GEMM wants for its B operand.
inline void transpose_u32(const uint32_t* src, int64_t src_ld, int64_t rows, int64_t cols, uint32_t* dst,
                          int64_t dst_ld) {
  int64_t r0 = 0;
#if defined(__AVX512F__)
  for (; r0 + 16 <= rows; r0 += 16) {
    int64_t c0 = 0;
    for (; c0 + 16 <= cols; c0 += 16) {
      __m512i r[16], a[16], b[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + (r0 + i) * src_ld + c0);
      for (int k = 0; k < 8; ++k) {
        a[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        a[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
      }
      for (int k = 0; k < 4; ++k) {  // b[4k + c], 128-bit lane L = column 4L + c, rows 4k..4k+3
        b[4 * k + 0] = _mm512_unpacklo_epi64(a[4 * k], a[4 * k + 2]);
        b[4 * k + 1] = _mm512_unpackhi_epi64(a[4 * k], a[4 * k + 2]);
        b[4 * k + 2] = _mm512_unpacklo_epi64(a[4 * k + 1], a[4 * k + 3]);
        b[4 * k + 3] = _mm512_unpackhi_epi64(a[4 * k + 1], a[4 * k + 3]);
      }
      for (int c = 0; c < 4; ++c) {  // 4x4 transpose of 128-bit lanes
        __m512i x0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44), x1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
        __m512i x2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44);
        __m512i x3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
        _mm512_storeu_si512(dst + (c0 + c) * dst_ld + r0, _mm512_shuffle_i32x4(x0, x2, 0x88));
        _mm512_storeu_si512(dst + (c0 + 4 + c) * dst_ld + r0, _mm512_shuffle_i32x4(x0, x2, 0xDD));
        _mm512_storeu_si512(dst + (c0 + 8 + c) * dst_ld + r0, _mm512_shuffle_i32x4(x1, x3, 0x88));
        _mm512_storeu_si512(dst + (c0 + 12 + c) * dst_ld + r0, _mm512_shuffle_i32x4(x1, x3, 0xDD));
      }
    }
    for (int64_t r = r0; r < r0 + 16; ++r)
      for (int64_t c = c0; c < cols; ++c) dst[c * dst_ld + r] = src[r * src_ld + c];
  }
#endif
  for (int64_t r = r0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * dst_ld + r] = src[r * src_ld + c];
}

// VNNI layout of V for the P.V GEMM: dst[(jp * n + d) * 2 + e] = rows[(2 jp + e) * ld + d], 16-bit elements.
inline void interleave_pairs_u16(const uint16_t* rows, int64_t ld, int64_t n_pairs, int64_t n, uint16_t* dst) {
#if defined(__AVX512BW__)
  alignas(64) static const uint16_t kLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                               8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                               24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i ilo = _mm512_load_si512(kLo), ihi = _mm512_load_si512(kHi);
#endif
  for (int64_t jp = 0; jp < n_pairs; ++jp) {
    const uint16_t* a = rows + 2 * jp * ld;
    const uint16_t* b = a + ld;
    uint16_t* o = dst + jp * n * 2;
    int64_t d = 0;
#if defined(__AVX512BW__)
    for (; d + 32 <= n; d += 32) {
      __m512i va = _mm512_loadu_si512(a + d), vb = _mm512_loadu_si512(b + d);
      _mm512_storeu_si512(o + 2 * d, _mm512_permutex2var_epi16(va, ilo, vb));
      _mm512_storeu_si512(o + 2 * d + 32, _mm512_permutex2var_epi16(va, ihi, vb));
    }
#endif
    for (; d < n; ++d) {
      o[2 * d] = a[d];
      o[2 * d + 1] = b[d];
    }
  }
}

#if defined(__AVX512F__)
// exp(x) for x <= 0 (scores minus their running max): Cody-Waite reduction and a Taylor polynomial of degree 7
// (kPrecise, ~1 ulp, for fp32 inputs) or 5 (relative error < 3e-6, far below the bf16 rounding of P that
// follows); exp of anything below -104 is 0.
template <bool kPrecise>
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p;
  if constexpr (kPrecise) {
    p = _mm512_set1_ps(1.f / 5040.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  } else {
    p = _mm512_set1_ps(1.f / 120.f);
  }
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}
#endif

// max_j s[j] * f[j] (f == nullptr: max_j s[j] * c) for j < n.
inline float scaled_max(const float* s, const float* f, float c, int64_t n) {
  int64_t j = 0;
  float m = kNegInf;
#if defined(__AVX512F__)
  __m512 vm = _mm512_set1_ps(kNegInf);
  const __m512 vc = _mm512_set1_ps(c);
  for (; j + 16 <= n; j += 16)
    vm = _mm512_max_ps(vm, _mm512_mul_ps(_mm512_loadu_ps(s + j), f ? _mm512_loadu_ps(f + j) : vc));
  m = _mm512_reduce_max_ps(vm);
#endif
  for (; j < n; ++j) m = std::max(m, s[j] * (f ? f[j] : c));
  return m;
}

// p[j] = exp(s[j] * f[j] - shift) * (g ? g[j] : 1) for j < n (f == nullptr: factor c), p[j] = 0 for n <= j < np,
// stored as CT (p may alias s when CT is float). Returns the sum of exp(s[j] * f[j] - shift), before g.
template <typename CT>
inline float exp_store(const float* s, const float* f, float c, float shift, const float* g, int64_t n, CT* p,
                       int64_t np) {
  int64_t j = 0;
  float sum = 0.f;
#if defined(__AVX512F__)
  const __m512 sh = _mm512_set1_ps(shift), vc = _mm512_set1_ps(c);
  __m512 vs = _mm512_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    __m512 e = exp512<std::is_same_v<CT, float>>(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), f ? _mm512_loadu_ps(f + j) : vc, sh));
    vs = _mm512_add_ps(vs, e);
    if (g) e = _mm512_mul_ps(e, _mm512_loadu_ps(g + j));
    if constexpr (std::is_same_v<CT, float>) {
      _mm512_storeu_ps(p + j, e);
    } else {
#if defined(__AVX512BF16__)
      __m256bh r = _mm512_cvtneps_pbh(e);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j), reinterpret_cast<__m256i&>(r));
#else
      alignas(64) float tmp[16];
      _mm512_store_ps(tmp, e);
      for (int x = 0; x < 16; ++x) p[j + x] = from_float<CT>(tmp[x]);
#endif
    }
  }
  sum = _mm512_reduce_add_ps(vs);
#endif
  for (; j < n; ++j) {
    float e = attn_exp(s[j] * (f ? f[j] : c) - shift);
    sum += e;
    p[j] = from_float<CT>(g ? e * g[j] : e);
  }
  for (; j < np; ++j) p[j] = from_float<CT>(0.f);
  return sum;
}

// o[d] = o[d] * a + t[d] * b
inline void axpby(float* o, float a, const float* t, float b, int64_t n) {
  int64_t d = 0;
#if defined(__AVX512F__)
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  for (; d + 16 <= n; d += 16)
    _mm512_storeu_ps(o + d, _mm512_fmadd_ps(_mm512_loadu_ps(o + d), va, _mm512_mul_ps(_mm512_loadu_ps(t + d), vb)));
#endif
  for (; d < n; ++d) o[d] = o[d] * a + t[d] * b;
}

// ------------------------------------------------------------------------------------- one block of rows
template <typename CT>
struct Workspace {
  std::vector<CT> qs, krows, kt, vrows, vv, p;
  std::vector<float> s, o, otmp, colk, colv, alpha;
  std::vector<SoftmaxRow> st;
  void reserve(int64_t M, int64_t Dp, int64_t Dh, int64_t tk, int64_t row_tile) {
    const int64_t Ms = std::min(M, row_tile);
    qs.resize(M * Dp);
    krows.resize(tk * Dp);
    kt.resize(Dp * tk);
    vrows.resize(tk * Dh);
    vv.resize(tk * Dh);
    p.resize(Ms * tk);
    s.resize(Ms * tk);
    o.resize(M * Dh);
    otmp.resize(Ms * Dh);
    colk.resize(tk);
    colv.resize(tk);
    alpha.resize(Ms);
    st.resize(M);
  }
};

// The queries of one task: M = n_rows * rep rows; row (i, r) is query q0 + i of head h0 + r (GQA: the rep
// query heads that share one K/V head are stacked so that each converted K/V tile serves all of them). The
// rows are processed in sub-tiles of kRowTile against each K/V tile, so a K/V tile is packed once per task.
template <typename QT>
struct RowBlock {
  const QT* q;  // query q0, head h0
  int64_t q_tok, q_head;
  int64_t n_rows, rep, q0, n_q;  // n_q: total queries (for the bottom-right causal alignment)
  QT* out;
  int64_t o_tok, o_head;
  float* lse;  // nullptr, or lse of (head h0, query q0); unit stride along queries
  int64_t lse_head;
};

template <typename KT>
struct KVBlock {
  const KT* k;
  const KT* v;
  int64_t k_tok, v_tok;
  const float* ks;  // per-key fp32 scales (fp8 K) or nullptr
  const float* vs;
  int64_t ks_tok, vs_tok;
  int64_t n;
};

template <typename QT, typename KT, typename VT, typename CT = typename ComputeT<QT>::type>
void attend_block(Workspace<CT>& w, const RowBlock<QT>& rb, const KVBlock<KT>& kb_k, const KVBlock<VT>& kb_v,
                  int64_t Dh, bool causal, float sm_scale, int64_t row_tile = kRowTile) {
  constexpr bool kVnni = GemmT<CT>::vnni;
  constexpr bool kKf8 = std::is_same_v<KT, fp8e4m3_t>;
  constexpr bool kVf8 = std::is_same_v<VT, fp8e4m3_t>;
  const int64_t Dp = kVnni ? round_up(Dh, 2) : Dh;
  const int64_t M = rb.n_rows * rb.rep;
  const int64_t nk = kb_k.n;
  int64_t nk_eff = nk;
  if (causal) nk_eff = std::min(nk, causal_last_key(rb.q0 + rb.n_rows - 1, rb.n_q, nk) + 1);
  const int64_t tk_max = std::min<int64_t>(kKeyTile, std::max<int64_t>(nk_eff, 1));
  w.reserve(M, Dp, Dh, round_up(tk_max, 2), row_tile);

  for (int64_t m = 0; m < M; ++m) w.st[m] = softmax_init();
  // A operand of S = Q K^T: with one key tile, no GQA stacking and no conversion, the GEMM reads the query rows
  // in place through their token stride (q is read once anyway); otherwise they are stacked into qs.
  const bool q_direct = std::is_same_v<QT, CT> && rb.rep == 1 && Dp == Dh && nk_eff <= kKeyTile;
  const CT* qa = reinterpret_cast<const CT*>(rb.q);
  int64_t q_ld = rb.q_tok;
  if (!q_direct) {
    for (int64_t i = 0; i < rb.n_rows; ++i)
      for (int64_t r = 0; r < rb.rep; ++r) {
        CT* dst = w.qs.data() + (i * rb.rep + r) * Dp;
        load_row<CT, QT>(rb.q + i * rb.q_tok + r * rb.q_head, dst, Dh);
        if (Dp > Dh) dst[Dh] = from_float<CT>(0.f);
      }
    qa = w.qs.data();
    q_ld = Dp;
  }
  // One key tile (short K/V, e.g. the 32 audio tokens): the GEMM result of each row sub-tile is final and is
  // normalised straight into out, skipping the fp32 accumulator passes.
  const bool single = nk_eff > 0 && nk_eff <= kKeyTile;
  auto emit = [&](int64_t m, float* o, float factor) {  // o * factor -> out row m, and its lse
    const int64_t i = m / rb.rep, r = m % rb.rep;
    store_row_scaled<QT>(o, factor, rb.out + i * rb.o_tok + r * rb.o_head, Dh);
    if (rb.lse) rb.lse[r * rb.lse_head + i] = softmax_lse(w.st[m]);
  };
  if (!single) std::fill(w.o.begin(), w.o.begin() + M * Dh, 0.f);

  for (int64_t j0 = 0; j0 < nk_eff; j0 += kKeyTile) {
    const int64_t tk = std::min(kKeyTile, nk_eff - j0);
    const int64_t tkp = kVnni ? round_up(tk, 2) : tk;
    // K tile -> B operand of S = Q K^T: K^T (fp32) or its VNNI form [Dp/2][tkp][2] (16-bit). A 16-bit source
    // whose rows are 4-byte aligned is transposed in place; fp8 and odd shapes go through a row buffer.
    const KT* ksrc = kb_k.k + j0 * kb_k.k_tok;
    const bool k_direct = std::is_same_v<KT, CT> && Dp == Dh && tkp == tk && (kb_k.k_tok * sizeof(CT)) % 4 == 0 &&
                          reinterpret_cast<uintptr_t>(ksrc) % 4 == 0;
    const CT* krows = reinterpret_cast<const CT*>(ksrc);
    int64_t k_ld = kb_k.k_tok;
    if (!k_direct) {
      for (int64_t j = 0; j < tk; ++j) {
        CT* dst = w.krows.data() + j * Dp;
        load_row<CT, KT>(ksrc + j * kb_k.k_tok, dst, Dh);
        if (Dp > Dh) dst[Dh] = from_float<CT>(0.f);
      }
      if (tkp > tk) std::memset(static_cast<void*>(w.krows.data() + tk * Dp), 0, Dp * sizeof(CT));
      krows = w.krows.data();
      k_ld = Dp;
    }
    if constexpr (kVnni)
      transpose_u32(reinterpret_cast<const uint32_t*>(krows), k_ld / 2, tkp, Dp / 2,
                    reinterpret_cast<uint32_t*>(w.kt.data()), tkp);
    else
      transpose_u32(reinterpret_cast<const uint32_t*>(krows), k_ld, tk, Dp, reinterpret_cast<uint32_t*>(w.kt.data()),
                    tkp);
    // per-key logit factors (sm_scale x fp8 K scale) and probability factors (fp8 V scale / its tile max)
    if constexpr (kKf8)
      for (int64_t j = 0; j < tk; ++j)
        w.colk[j] = fp8_logit_scale(sm_scale, kb_k.ks[(j0 + j) * kb_k.ks_tok], kFp8ShiftScale);
    float vmax = 1.f;
    if constexpr (kVf8) {
      vmax = 0.f;
      for (int64_t j = 0; j < tk; ++j) {
        w.colv[j] = kb_v.vs[(j0 + j) * kb_v.vs_tok] * kFp8ShiftScale;
        vmax = std::max(vmax, std::abs(w.colv[j]));
      }
      if (!(vmax > 0.f)) vmax = 1.f;
      for (int64_t j = 0; j < tk; ++j) w.colv[j] /= vmax;  // keeps P * v_scale in [0, 1]
    }
    // V tile -> B operand of O += P V: rows (fp32) or VNNI pairs of rows (16-bit)
    const VT* vsrc = kb_v.v + j0 * kb_v.v_tok;
    const CT* vrows;
    int64_t v_ld;
    if constexpr (std::is_same_v<VT, CT>) {
      vrows = reinterpret_cast<const CT*>(vsrc);
      v_ld = kb_v.v_tok;
    } else {
      for (int64_t j = 0; j < tk; ++j) load_row<CT, VT>(vsrc + j * kb_v.v_tok, w.vrows.data() + j * Dh, Dh);
      vrows = w.vrows.data();
      v_ld = Dh;
    }
    if constexpr (kVnni) {
      interleave_pairs_u16(reinterpret_cast<const uint16_t*>(vrows), v_ld, tk / 2, Dh,
                           reinterpret_cast<uint16_t*>(w.vv.data()));
      if (tkp > tk) {  // last key paired with a zero row
        uint16_t* o = reinterpret_cast<uint16_t*>(w.vv.data()) + (tk / 2) * Dh * 2;
        const uint16_t* a = reinterpret_cast<const uint16_t*>(vrows) + (tk - 1) * v_ld;
        for (int64_t d = 0; d < Dh; ++d) {
          o[2 * d] = a[d];
          o[2 * d + 1] = 0;
        }
      }
    }
    const CT* vb = kVnni ? w.vv.data() : vrows;
    const int64_t vb_ld = kVnni ? Dh : v_ld;

    for (int64_t m0 = 0; m0 < M; m0 += row_tile) {
      const int64_t ms = std::min(row_tile, M - m0);
      if (causal && causal_last_key(rb.q0 + (m0 + ms - 1) / rb.rep, rb.n_q, nk) < j0) {  // all masked
        if (single) {
          std::fill(w.otmp.begin(), w.otmp.begin() + Dh, 0.f);
          for (int64_t x = 0; x < ms; ++x) emit(m0 + x, w.otmp.data(), 0.f);
        }
        continue;
      }
      brgemm<CT>(ms, tkp, Dp, q_ld, tkp, tkp, qa + m0 * q_ld, w.kt.data(), w.s.data());
      // online softmax over the tile, row by row
      for (int64_t x = 0; x < ms; ++x) {
        const int64_t m = m0 + x;
        const float* s = w.s.data() + x * tkp;
        CT* p = std::is_same_v<CT, float> ? reinterpret_cast<CT*>(w.s.data() + x * tkp) : w.p.data() + x * tkp;
        int64_t lim = tk;
        if (causal) lim = std::min(tk, causal_last_key(rb.q0 + m / rb.rep, rb.n_q, nk) - j0 + 1);
        if (lim <= 0) {
          std::memset(static_cast<void*>(p), 0, tkp * sizeof(CT));
          w.alpha[x] = 1.f;
          continue;
        }
        const float* f = kKf8 ? w.colk.data() : nullptr;
        w.alpha[x] = softmax_update_max(w.st[m], scaled_max(s, f, sm_scale, lim));
        softmax_add_sum(w.st[m], exp_store<CT>(s, f, sm_scale, softmax_shift(w.st[m].m),
                                               kVf8 ? w.colv.data() : nullptr, lim, p, tkp));
      }
      const CT* P = std::is_same_v<CT, float> ? reinterpret_cast<const CT*>(w.s.data()) : w.p.data();
      brgemm<CT>(ms, Dh, tkp, tkp, vb_ld, Dh, P, vb, w.otmp.data());
      if (single) {
        for (int64_t x = 0; x < ms; ++x) emit(m0 + x, w.otmp.data() + x * Dh, softmax_inv_sum(w.st[m0 + x]) * vmax);
        continue;
      }
      for (int64_t x = 0; x < ms; ++x)
        axpby(w.o.data() + (m0 + x) * Dh, w.alpha[x], w.otmp.data() + x * Dh, vmax, Dh);
    }
  }
  // normalise and write out / lse through their strides
  if (!single)
    for (int64_t m = 0; m < M; ++m) emit(m, w.o.data() + m * Dh, softmax_inv_sum(w.st[m]));
}

// Runs task(t, workspace) for t in [0, n) on all threads, tasks handed out dynamically (causal rows and
// GQA groups have unequal cost); each thread owns one workspace and releases the AMX state at the end.
template <typename CT, typename F>
void run_tasks(int64_t n, const F& task) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), n);
  at::parallel_for(0, nt, 1, [&](int64_t b, int64_t e) {
    Workspace<CT> w;
    for (int64_t x = b; x < e; ++x)
      for (int64_t t = next.fetch_add(1); t < n; t = next.fetch_add(1)) task(t, w);
    at::native::cpublas::brgemm_release(GemmT<CT>::vnni);
#if defined(__AVX512F__)
    _mm_sfence();  // order the non-temporal output stores before the op returns
#endif
  });
}

// ---------------------------------------------------------------------------------------------- attention
template <typename QT, typename KT, typename VT>
void attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& ks,
                    const at::Tensor& vs, bool causal, float sm_scale, at::Tensor& out, float* lse) {
  const int64_t B = q.size(0), Nq = q.size(1), Hq = q.size(2), Dh = q.size(3);
  const int64_t Nk = k.size(1), Hk = k.size(2);
  const int64_t rep = Hq / Hk;
  // Queries per task: up to kMaxSubTiles row sub-tiles (K/V tiles are packed once per task), fewer when that
  // would leave under 4 tasks per thread.
  const int64_t sub = std::max<int64_t>(1, kRowTile / rep);
  const int64_t nsub = (Nq + sub - 1) / sub;
  const int64_t want = 4 * int64_t(at::get_num_threads());
  const int64_t per = std::clamp<int64_t>((B * Hk * nsub) / std::max<int64_t>(want, 1), 1, kMaxSubTiles);
  const int64_t rows = sub * per;
  const int64_t ntile = (Nq + rows - 1) / rows;
  using CT = typename ComputeT<QT>::type;
  const QT* qp = cptr<QT>(q);
  const KT* kp = cptr<KT>(k);
  const VT* vp = cptr<VT>(v);
  QT* op = ptr<QT>(out);
  run_tasks<CT>(B * Hk * ntile, [&](int64_t t, Workspace<CT>& w) {
    const int64_t tile = t % ntile, hk = (t / ntile) % Hk, b = t / (ntile * Hk);
    const int64_t q0 = tile * rows, h0 = hk * rep;
    RowBlock<QT> rb{qp + b * q.stride(0) + q0 * q.stride(1) + h0 * q.stride(2), q.stride(1), q.stride(2),
                    std::min(rows, Nq - q0), rep, q0, Nq,
                    op + b * out.stride(0) + q0 * out.stride(1) + h0 * out.stride(2), out.stride(1), out.stride(2),
                    lse ? lse + (b * Hq + h0) * Nq + q0 : nullptr, Nq};
    KVBlock<KT> kb{kp + b * k.stride(0) + hk * k.stride(2), nullptr, k.stride(1), 0,
                   ks.defined() ? cptr<float>(ks) + b * ks.stride(0) + hk * ks.stride(2) : nullptr, nullptr,
                   ks.defined() ? ks.stride(1) : 0, 0, Nk};
    KVBlock<VT> vb{nullptr, vp + b * v.stride(0) + hk * v.stride(2), 0, v.stride(1), nullptr,
                   vs.defined() ? cptr<float>(vs) + b * vs.stride(0) + hk * vs.stride(2) : nullptr, 0,
                   vs.defined() ? vs.stride(1) : 0, Nk};
    attend_block<QT, KT, VT>(w, rb, kb, vb, Dh, causal, sm_scale);
  });
}

inline at::Tensor unit_last_stride(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

void attention_fwd_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                       const c10::optional<at::Tensor>& k_scale, const c10::optional<at::Tensor>& v_scale,
                       bool is_causal, double sm_scale, at::Tensor& out, const c10::optional<at::Tensor>& lse) {
  TORCH_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4, "attention_fwd: q, k, v must be 4-D (NHD)");
  TORCH_CHECK(out.sizes() == q_in.sizes() && out.scalar_type() == q_in.scalar_type(),
              "attention_fwd: out must match q in shape and dtype");
  const int64_t B = q_in.size(0), Nq = q_in.size(1), Hq = q_in.size(2), Dh = q_in.size(3);
  TORCH_CHECK(k_in.sizes() == v_in.sizes() && k_in.size(0) == B && k_in.size(3) == Dh,
              "attention_fwd: k and v must be [B, Nk, Hkv, Dh] like q");
  const int64_t Nk = k_in.size(1), Hk = k_in.size(2);
  TORCH_CHECK(Hk > 0 && Hq % Hk == 0, "attention_fwd: q heads must be a multiple of k/v heads");
  const bool kf8 = k_in.scalar_type() == at::kFloat8_e4m3fn, vf8 = v_in.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK(kf8 || k_in.scalar_type() == q_in.scalar_type(), "attention_fwd: k must have q's dtype or be fp8");
  TORCH_CHECK(vf8 || v_in.scalar_type() == q_in.scalar_type(), "attention_fwd: v must have q's dtype or be fp8");
  at::Tensor ks, vs;
  if (kf8) {
    TORCH_CHECK(k_scale.has_value(), "attention_fwd: float8_e4m3fn k needs k_scale");
    ks = k_scale->to(at::kFloat);
    TORCH_CHECK(ks.dim() == 4 && ks.size(0) == B && ks.size(1) == Nk && ks.size(2) == Hk && ks.size(3) == 1,
                "attention_fwd: k_scale must be [B, Nk, Hkv, 1]");
  }
  if (vf8) {
    TORCH_CHECK(v_scale.has_value(), "attention_fwd: float8_e4m3fn v needs v_scale");
    vs = v_scale->to(at::kFloat);
    TORCH_CHECK(vs.dim() == 4 && vs.size(0) == B && vs.size(1) == Nk && vs.size(2) == Hk && vs.size(3) == 1,
                "attention_fwd: v_scale must be [B, Nk, Hkv, 1]");
  }
  at::Tensor lse_t;
  if (lse.has_value()) {
    TORCH_CHECK(lse->scalar_type() == at::kFloat && lse->dim() == 3 && lse->size(0) == B && lse->size(1) == Hq &&
                    lse->size(2) == Nq, "attention_fwd: lse must be fp32 [B, Hq, Nq]");
    lse_t = lse->is_contiguous() ? *lse : at::empty(lse->sizes(), lse->options());
  }
  at::Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in), v = unit_last_stride(v_in);
  at::Tensor o = out.stride(-1) == 1 ? out : at::empty(out.sizes(), out.options());
  if (B * Nq * Hq > 0 && Dh > 0) {
    float* lp = lse_t.defined() ? lse_t.data_ptr<float>() : nullptr;
    LIVEACT_DISPATCH_FLOAT(q.scalar_type(), "attention_fwd", [&] {
      if (kf8 && vf8)
        attention_impl<scalar_t, fp8e4m3_t, fp8e4m3_t>(q, k, v, ks, vs, is_causal, float(sm_scale), o, lp);
      else if (kf8)
        attention_impl<scalar_t, fp8e4m3_t, scalar_t>(q, k, v, ks, vs, is_causal, float(sm_scale), o, lp);
      else if (vf8)
        attention_impl<scalar_t, scalar_t, fp8e4m3_t>(q, k, v, ks, vs, is_causal, float(sm_scale), o, lp);
      else
        attention_impl<scalar_t, scalar_t, scalar_t>(q, k, v, ks, vs, is_causal, float(sm_scale), o, lp);
    });
  } else if (lse_t.defined()) {
    lse_t.fill_(kNegInf);
  }
  if (!o.is_same(out)) out.copy_(o);
  if (lse_t.defined() && !lse_t.is_same(*lse)) lse->copy_(lse_t);
}

// ------------------------------------------------------------------------------- audio cross-attention
template <typename QT>
void audio_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t fl, int64_t f0,
                bool zero_first, float sm_scale, at::Tensor& out) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), Dh = q.size(3);
  const int64_t T = L / fl, Na = k.size(2);
  const int64_t rows = std::min<int64_t>(fl, kAudioRowTile);
  const int64_t nchunk = (fl + rows - 1) / rows;
  using CT = typename ComputeT<QT>::type;
  const QT* qp = cptr<QT>(q);
  const QT* kp = cptr<QT>(k);
  const QT* vp = cptr<QT>(v);
  QT* op = ptr<QT>(out);
  run_tasks<CT>(B * T * H * nchunk, [&](int64_t t, Workspace<CT>& w) {
    const int64_t c = t % nchunk, h = (t / nchunk) % H, fr = (t / (nchunk * H)) % T, b = t / (nchunk * H * T);
    const int64_t i0 = fr * fl + c * rows, n = std::min(rows, fl - c * rows);
    QT* o = op + b * out.stride(0) + i0 * out.stride(1) + h * out.stride(2);
    if (zero_first && fr == 0) {
      for (int64_t i = 0; i < n; ++i) std::memset(static_cast<void*>(o + i * out.stride(1)), 0, Dh * sizeof(QT));
      return;
    }
    RowBlock<QT> rb{qp + b * q.stride(0) + i0 * q.stride(1) + h * q.stride(2), q.stride(1), q.stride(2), n, 1, 0, n,
                    o, out.stride(1), out.stride(2), nullptr, 0};
    const int64_t fa = f0 + fr;
    KVBlock<QT> kb{kp + b * k.stride(0) + fa * k.stride(1) + h * k.stride(3), nullptr, k.stride(2), 0,
                   nullptr, nullptr, 0, 0, Na};
    KVBlock<QT> vb{nullptr, vp + b * v.stride(0) + fa * v.stride(1) + h * v.stride(3), 0, v.stride(2),
                   nullptr, nullptr, 0, 0, Na};
    attend_block<QT, QT, QT>(w, rb, kb, vb, Dh, false, sm_scale, kAudioRowTile);
  });
}

void audio_cross_attention_fwd_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                   int64_t frame_len, int64_t frame_offset, bool zero_first_frame, double sm_scale,
                                   at::Tensor& out) {
  TORCH_CHECK(q_in.dim() == 4 && k_in.dim() == 5 && v_in.dim() == 5,
              "audio_cross_attention_fwd: q must be [B, T*fl, H, Dh], k/v [B, F_audio, N_a, H, Dh]");
  TORCH_CHECK(out.sizes() == q_in.sizes() && out.scalar_type() == q_in.scalar_type(),
              "audio_cross_attention_fwd: out must match q in shape and dtype");
  TORCH_CHECK(k_in.scalar_type() == q_in.scalar_type() && v_in.scalar_type() == q_in.scalar_type(),
              "audio_cross_attention_fwd: k and v must have q's dtype");
  const int64_t B = q_in.size(0), L = q_in.size(1), H = q_in.size(2), Dh = q_in.size(3);
  TORCH_CHECK(frame_len > 0 && L % frame_len == 0, "audio_cross_attention_fwd: frame_len must divide seqlen");
  TORCH_CHECK(k_in.sizes() == v_in.sizes() && k_in.size(0) == B && k_in.size(3) == H && k_in.size(4) == Dh,
              "audio_cross_attention_fwd: k/v must be [B, F_audio, N_a, H, Dh]");
  TORCH_CHECK(frame_offset >= 0 && frame_offset + L / frame_len <= k_in.size(1),
              "audio_cross_attention_fwd: frame_offset + frames exceeds F_audio");
  at::Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in), v = unit_last_stride(v_in);
  at::Tensor o = out.stride(-1) == 1 ? out : at::empty(out.sizes(), out.options());
  if (B * L * H > 0 && Dh > 0) {
    LIVEACT_DISPATCH_FLOAT(q.scalar_type(), "audio_cross_attention_fwd", [&] {
      audio_impl<scalar_t>(q, k, v, frame_len, frame_offset, zero_first_frame, float(sm_scale), o);
    });
  }
  if (!o.is_same(out)) out.copy_(o);
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CPU, m) {
  m.impl("attention_fwd", &attention_fwd_cpu);
  m.impl("audio_cross_attention_fwd", &audio_cross_attention_fwd_cpu);
}

}  // namespace liveact
