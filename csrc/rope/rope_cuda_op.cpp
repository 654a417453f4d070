// at::Tensor entry point of the rope3d CUDA kernel, registered for the CUDA dispatch key.
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h, absent from slim toolkits
#include <c10/cuda/CUDAGuard.h>

#include "common/cpu_utils.h"
#include "rope/rope.h"

namespace liveact {
namespace {

void rope3d_fwd_cuda_op(const at::Tensor& x_in, const at::Tensor& cos_f, const at::Tensor& sin_f,
                        const at::Tensor& cos_h, const at::Tensor& sin_h, const at::Tensor& cos_w,
                        const at::Tensor& sin_w, at::Tensor& out) {
  TORCH_CHECK(x_in.is_cuda() && out.is_cuda(), "rope3d_fwd: x and out must be CUDA tensors");
  TORCH_CHECK(x_in.dim() == 4 && out.sizes() == x_in.sizes() && out.scalar_type() == x_in.scalar_type(),
              "rope3d_fwd: out must match x (B, N, H, Dh)");
  for (const at::Tensor* t : {&cos_f, &sin_f, &cos_h, &sin_h, &cos_w, &sin_w})
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == at::kFloat && t->dim() == 2 && t->is_contiguous(),
                "rope3d_fwd: cos/sin tables must be contiguous 2-D float32 CUDA tensors");
  const int64_t N = x_in.size(1), Dh = x_in.size(3);
  TORCH_CHECK(cos_f.size(0) * cos_h.size(0) * cos_w.size(0) == N, "rope3d_fwd: tables do not match x's token count");
  TORCH_CHECK(2 * (cos_f.size(1) + cos_h.size(1) + cos_w.size(1)) == Dh, "rope3d_fwd: tables do not cover head_dim");
  c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  at::Tensor y = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  Rope3dParams p{x.const_data_ptr(), y.data_ptr(),
                 RopeTables{cos_f.const_data_ptr<float>(), sin_f.const_data_ptr<float>(), cos_h.const_data_ptr<float>(),
                            sin_h.const_data_ptr<float>(), cos_w.const_data_ptr<float>(), sin_w.const_data_ptr<float>(),
                            int32_t(cos_f.size(1)), int32_t(cos_h.size(1)), int32_t(cos_w.size(1))},
                 x.size(0), N, x.size(2), Dh, x.stride(0), x.stride(1), x.stride(2), cos_h.size(0), cos_w.size(0)};
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = LIVEACT_DISPATCH_FLOAT(x.scalar_type(), "rope3d_fwd",
                                           [&] { return rope3d_fwd_cuda<scalar_t>(p, stream); });
  TORCH_CHECK(err == cudaSuccess, "rope3d_fwd: CUDA launch failed: ", cudaGetErrorString(err));
  if (!out.is_same(y)) out.copy_(y);
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CUDA, m) {
  m.impl("rope3d_fwd", &rope3d_fwd_cuda_op);
}

}  // namespace liveact
