// The whole exported surface of liveact_kernels._C: every op schema (TORCH_LIBRARY), and the pybind11
// module that exposes build information. Kernels register themselves per family with
// TORCH_LIBRARY_IMPL(liveact, CPU|CUDA, m) in <family>_cpu.cpp / <family>_cuda_op.cpp.
#include <torch/library.h>
#include <torch/extension.h>

#include <string>

// Schemas. Every op writes into preallocated outputs (Tensor(a!)), allocated by the Python wrapper,
// so that tests can pre-fill them with NaN and catch a kernel that never ran.
TORCH_LIBRARY(liveact, m) {
  // ---- adaln family: x [B, L, D]; shift/scale/gate [B, F, D] with L = F * frame_len ----
  m.def("adaln_modulate_fwd(Tensor x, Tensor shift, Tensor scale, Tensor? weight, Tensor? bias, float eps, "
        "bool rms, Tensor(a!) out) -> ()");
  m.def("gated_residual_fwd(Tensor x, Tensor y, Tensor gate, Tensor(a!) out) -> ()");
  m.def("adaln_residual_fwd(Tensor x, Tensor y, Tensor gate, Tensor shift, Tensor scale, Tensor? weight, "
        "Tensor? bias, float eps, bool rms, Tensor(a!) x_out, Tensor(b!) out) -> ()");
  m.def("rms_norm_fwd(Tensor x, Tensor? weight, float eps, Tensor(a!) out) -> ()");
  // ---- rope: x [B, F*h*w, H, Dh]; fp32 cos/sin tables per axis, [F, Dt/2], [h, Dh_/2], [w, Dw/2] ----
  m.def("rope3d_fwd(Tensor x, Tensor cos_f, Tensor sin_f, Tensor cos_h, Tensor sin_h, Tensor cos_w, "
        "Tensor sin_w, Tensor(a!) out) -> ()");
  // ---- convkv: x [B, group*M, H, Dh] -> out [B, M, H, Dh]; weight [H*Dh, 1, group] ----
  m.def("convkv_compress_fwd(Tensor x, Tensor weight, int group, str merge, int frame_len, Tensor(a!) out) -> ()");
  // In-place ConvKV cache update of one layer and step (reference-model.md 4.2): caches (B, S*fl, H, Dh)
  // bf16/fp16/fp32 or float8_e4m3fn with scales (B, S*fl, H, 1) fp32; weights (H*Dh, group) fp32.
  m.def("convkv_cache_update_fwd(Tensor(a!) cache_k, Tensor(b!) cache_v, Tensor new_k, Tensor new_v, "
        "Tensor weight_k, Tensor weight_v, Tensor(c!)? k_scale, Tensor(d!)? v_scale, int frame_len, int group, "
        "str merge, int sinks, int compressed, int recent, int block) -> ()");
  // ---- causal depthwise conv1d: x [B, C, L], weight [C, W] (causal-conv1d layout) ----
  m.def("causal_dwconv1d_fwd(Tensor x, Tensor weight, Tensor? bias, Tensor? initial_states, int stride, "
        "str? activation, Tensor(a!) out, Tensor(b!)? final_states) -> ()");
  m.def("causal_dwconv1d_update_fwd(Tensor x, Tensor(a!) conv_state, Tensor weight, Tensor? bias, "
        "str? activation, Tensor(b!) out) -> ()");
  // ---- fp8: x viewed as [groups, group_size] rows (contiguous); scale [groups] fp32 ----
  m.def("quantize_fp8_fwd(Tensor x, int group_size, Tensor(a!) q, Tensor(b!) scale) -> ()");
  m.def("dequantize_fp8_fwd(Tensor q, Tensor scale, int group_size, Tensor(a!) out) -> ()");
  m.def("fp8_linear_fwd(Tensor x_q, Tensor x_scale, Tensor w_q, Tensor w_scale, Tensor? bias, Tensor(a!) out) -> ()");
  // ---- attention: q [B, Nq, Hq, Dh], k/v [B, Nk, Hkv, Dh] (NHD, any strides with unit last-dim stride);
  //      k_scale/v_scale [B, Nk, Hkv, 1] fp32 when k/v are float8_e4m3fn; lse [B, Hq, Nq] fp32 ----
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? k_scale, Tensor? v_scale, bool is_causal, "
        "float sm_scale, Tensor(a!) out, Tensor(b!)? lse) -> ()");
  // ---- audio cross-attention: q [B, T*frame_len, H, Dh]; k/v [B, F_audio, N_a, H, Dh] ----
  m.def("audio_cross_attention_fwd(Tensor q, Tensor k, Tensor v, int frame_len, int frame_offset, "
        "bool zero_first_frame, float sm_scale, Tensor(a!) out) -> ()");
}

// Build information, filled in by setup.py through -D macros.
#ifndef LIVEACT_BUILD_CUDA
#define LIVEACT_BUILD_CUDA 0
#endif
#ifndef LIVEACT_CXX_FLAGS
#define LIVEACT_CXX_FLAGS ""
#endif
#ifndef LIVEACT_CUDA_ARCHS
#define LIVEACT_CUDA_ARCHS ""
#endif
#ifndef LIVEACT_CPU_ARCH
#define LIVEACT_CPU_ARCH ""
#endif

static pybind11::dict build_info() {
  pybind11::dict d;
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string("unknown");
#endif
  d["cxx_flags"] = std::string(LIVEACT_CXX_FLAGS);
  d["cpu_arch"] = std::string(LIVEACT_CPU_ARCH);
  pybind11::list feats;
#ifdef __AVX2__
  feats.append("avx2");
#endif
#ifdef __FMA__
  feats.append("fma");
#endif
#ifdef __F16C__
  feats.append("f16c");
#endif
#ifdef __AVX512F__
  feats.append("avx512f");
#endif
#ifdef __AVX512BF16__
  feats.append("avx512bf16");
#endif
#ifdef __AVX512FP16__
  feats.append("avx512fp16");
#endif
#ifdef __AVX512VNNI__
  feats.append("avx512vnni");
#endif
#ifdef __AMX_BF16__
  feats.append("amx-bf16");
#endif
#ifdef __AMX_TILE__
  feats.append("amx-tile");
#endif
#ifdef _OPENMP
  feats.append("openmp");
#endif
  d["cpu_features"] = feats;
  d["cuda_kernels"] = bool(LIVEACT_BUILD_CUDA);
  d["cuda_archs"] = std::string(LIVEACT_CUDA_ARCHS);
  d["torch_version_built"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                            "." + std::to_string(TORCH_VERSION_PATCH);
  return d;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "liveact compiled kernels: ops are registered under torch.ops.liveact";
  m.def("build_info", &build_info, "Compiler, flags, CPU features and CUDA targets of this build.");
}
