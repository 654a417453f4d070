// at::Tensor entry points of the adaLN family's CUDA kernels, registered for the CUDA dispatch key.
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h, absent from slim toolkits
#include <c10/cuda/CUDAGuard.h>

#include "common/cpu_utils.h"
#include "adaln/adaln.h"

namespace liveact {
namespace {

void rms_norm_fwd_cuda_op(const at::Tensor& x_in, const c10::optional<at::Tensor>& weight, double eps,
                          at::Tensor& out) {
  TORCH_CHECK(x_in.is_cuda() && out.is_cuda(), "rms_norm_fwd: x and out must be CUDA tensors");
  TORCH_CHECK(out.is_contiguous() && out.sizes() == x_in.sizes(), "rms_norm_fwd: out must be contiguous, shaped like x");
  c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.contiguous();
  at::Tensor w;
  if (weight.has_value()) w = weight->to(at::kFloat).contiguous();
  RmsNormParams p{x.const_data_ptr(), w.defined() ? w.const_data_ptr<float>() : nullptr, out.data_ptr(),
                  x.size(-1) ? x.numel() / x.size(-1) : 0, x.size(-1), x.size(-1), float(eps)};
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = LIVEACT_DISPATCH_FLOAT(x.scalar_type(), "rms_norm_fwd",
                                           [&] { return rms_norm_fwd_cuda<scalar_t>(p, stream); });
  TORCH_CHECK(err == cudaSuccess, "rms_norm_fwd: CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CUDA, m) {
  m.impl("rms_norm_fwd", &rms_norm_fwd_cuda_op);
}

}  // namespace liveact
