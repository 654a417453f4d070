// at::Tensor entry points of the FP8 family on CUDA: quantize / dequantize kernels (fp8_cuda.cu) and the
// exact W8A8 emulation behind fp8_linear_fwd (GPUs with FP8 tensor cores take torch._scaled_mm in Python,
// liveact_kernels/fp8_linear.py; this op serves sm_80 and shapes _scaled_mm rejects).
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h, absent from slim toolkits
#include <c10/cuda/CUDAGuard.h>

#include "common/cpu_utils.h"
#include "fp8/fp8.h"

namespace liveact {
namespace {

void quantize_fp8_fwd_cuda_op(const at::Tensor& x_in, int64_t group_size, at::Tensor& q, at::Tensor& scale) {
  TORCH_CHECK(x_in.is_cuda() && q.is_cuda() && scale.is_cuda(), "quantize_fp8_fwd: x, q and scale must be CUDA tensors");
  TORCH_CHECK(q.scalar_type() == at::kFloat8_e4m3fn && q.is_contiguous() && q.numel() == x_in.numel(),
              "quantize_fp8_fwd: q must be a contiguous float8_e4m3fn tensor with x's ", x_in.numel(), " elements");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous(),
              "quantize_fp8_fwd: scale must be a contiguous float32 tensor");
  c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t n = x_in.numel();
  if (group_size == 0) {
    TORCH_CHECK(n == 0, "quantize_fp8_fwd: group_size 0 needs an empty x");
    scale.fill_(1e-12);
    return;
  }
  TORCH_CHECK(group_size > 0 && n % group_size == 0 && scale.numel() == n / group_size,
              "quantize_fp8_fwd: group_size ", group_size, " and scale (", scale.numel(), " elements) do not tile x (",
              n, " elements)");
  at::Tensor x = x_in.contiguous();
  Fp8QuantParams p{x.const_data_ptr(), reinterpret_cast<uint8_t*>(q.data_ptr()), scale.data_ptr<float>(),
                   n / group_size, group_size};
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = LIVEACT_DISPATCH_FLOAT(x.scalar_type(), "quantize_fp8_fwd",
                                           [&] { return quantize_fp8_fwd_cuda<scalar_t>(p, stream); });
  TORCH_CHECK(err == cudaSuccess, "quantize_fp8_fwd: CUDA launch failed: ", cudaGetErrorString(err));
}

void dequantize_fp8_fwd_cuda_op(const at::Tensor& q_in, const at::Tensor& scale_in, int64_t group_size, at::Tensor& out) {
  TORCH_CHECK(q_in.is_cuda() && scale_in.is_cuda() && out.is_cuda(), "dequantize_fp8_fwd: q, scale and out must be CUDA tensors");
  TORCH_CHECK(q_in.scalar_type() == at::kFloat8_e4m3fn && scale_in.scalar_type() == at::kFloat,
              "dequantize_fp8_fwd: q must be float8_e4m3fn and scale float32");
  TORCH_CHECK(out.is_contiguous() && out.numel() == q_in.numel(),
              "dequantize_fp8_fwd: out must be contiguous with q's ", q_in.numel(), " elements");
  const int64_t n = q_in.numel();
  if (n == 0) return;
  TORCH_CHECK(group_size > 0 && n % group_size == 0 && scale_in.numel() == n / group_size,
              "dequantize_fp8_fwd: group_size ", group_size, " and scale (", scale_in.numel(),
              " elements) do not tile q (", n, " elements)");
  c10::cuda::CUDAGuard guard(q_in.device());
  at::Tensor q = q_in.contiguous(), scale = scale_in.contiguous();
  Fp8DequantParams p{reinterpret_cast<const uint8_t*>(q.const_data_ptr()), scale.const_data_ptr<float>(), out.data_ptr(),
                     n, group_size};
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = LIVEACT_DISPATCH_FLOAT(out.scalar_type(), "dequantize_fp8_fwd",
                                           [&] { return dequantize_fp8_fwd_cuda<scalar_t>(p, stream); });
  TORCH_CHECK(err == cudaSuccess, "dequantize_fp8_fwd: CUDA launch failed: ", cudaGetErrorString(err));
}

// Exact emulation: e4m3 -> fp32 is exact, fp32 GEMM (TF32 stays off unless the user enables it) with the
// reference's epilogue order (acc * x_scale) * w_scale + bias.
void fp8_linear_fwd_cuda_op(const at::Tensor& x_q, const at::Tensor& x_scale, const at::Tensor& w_q,
                            const at::Tensor& w_scale, const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  TORCH_CHECK(x_q.is_cuda() && w_q.is_cuda() && out.is_cuda(), "fp8_linear_fwd: tensors must be on CUDA");
  TORCH_CHECK(x_q.dim() == 2 && w_q.dim() == 2 && x_q.size(1) == w_q.size(1),
              "fp8_linear_fwd: x_q (M, K) and w_q (N, K) must be 2-D with the same K");
  const int64_t M = x_q.size(0), N = w_q.size(0);
  TORCH_CHECK(x_scale.numel() == M && w_scale.numel() == N, "fp8_linear_fwd: x_scale needs M, w_scale N elements");
  c10::cuda::CUDAGuard guard(x_q.device());
  at::Tensor acc = at::mm(x_q.to(at::kFloat), w_q.to(at::kFloat).t());
  acc = acc * x_scale.to(at::kFloat).reshape({M, 1}) * w_scale.to(at::kFloat).reshape({1, N});
  if (bias.has_value()) acc = acc + bias->to(at::kFloat).reshape({1, N});
  out.copy_(acc);
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CUDA, m) {
  m.impl("quantize_fp8_fwd", &quantize_fp8_fwd_cuda_op);
  m.impl("dequantize_fp8_fwd", &dequantize_fp8_fwd_cuda_op);
  m.impl("fp8_linear_fwd", &fp8_linear_fwd_cuda_op);
}

}  // namespace liveact
