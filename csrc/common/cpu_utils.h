// Helpers for the C++ CPU kernels: dtype dispatch to liveact storage types, and row-parallel loops.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/numeric.h"

namespace liveact {

// Maps an at::ScalarType to the liveact storage type (float, bf16_t, fp16_t) and runs the body with
// `scalar_t` bound to it. The storage types have the same size and bits as the ATen ones.
#define LIVEACT_DISPATCH_FLOAT(TYPE, NAME, ...)                                         \
  [&] {                                                                                 \
    switch (TYPE) {                                                                     \
      case at::ScalarType::Float: { using scalar_t = float; return __VA_ARGS__(); }     \
      case at::ScalarType::BFloat16: { using scalar_t = ::liveact::bf16_t; return __VA_ARGS__(); } \
      case at::ScalarType::Half: { using scalar_t = ::liveact::fp16_t; return __VA_ARGS__(); }     \
      default: TORCH_CHECK(false, NAME, ": unsupported dtype ", TYPE, " (expected float32/bfloat16/float16)"); \
    }                                                                                   \
  }()

template <typename T>
inline T* ptr(const at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr()); }
template <typename T>
inline const T* cptr(const at::Tensor& t) { return reinterpret_cast<const T*>(t.const_data_ptr()); }

// Rows of `row_bytes` each: a grain that gives each task ~64 KiB of work keeps OpenMP overhead small.
inline int64_t row_grain(int64_t row_bytes) {
  return std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(row_bytes, 1));
}

}  // namespace liveact
