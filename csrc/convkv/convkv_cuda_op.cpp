// at::Tensor entry points of the ConvKV family's CUDA kernels, registered for the CUDA dispatch key.
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h, absent from slim toolkits
#include <c10/cuda/CUDAGuard.h>

#include "common/cpu_utils.h"
#include "convkv/convkv.h"

namespace liveact {
namespace {

void convkv_compress_fwd_cuda_op(const at::Tensor& x_in, const at::Tensor& weight, int64_t group,
                                 c10::string_view mode, int64_t frame_len, at::Tensor& out) {
  const char* op = "convkv_compress_fwd";
  TORCH_CHECK(x_in.is_cuda() && out.is_cuda() && weight.is_cuda(), op, ": tensors must be on CUDA");
  TORCH_CHECK(x_in.dim() == 4 && group >= 1 && x_in.size(1) % group == 0, op, ": x must be (B, group*M, H, Dh)");
  TORCH_CHECK(mode == "token" || mode == "frame", op, ": mode must be 'token' or 'frame'");
  const bool frame_mode = mode == "frame";
  const int64_t B = x_in.size(0), N = x_in.size(1), H = x_in.size(2), Dh = x_in.size(3), M = N / group;
  if (frame_mode) TORCH_CHECK(frame_len >= 1 && N % (group * frame_len) == 0, op, ": bad frame_len");
  TORCH_CHECK(out.sizes() == at::IntArrayRef({B, M, H, Dh}) && out.scalar_type() == x_in.scalar_type(), op,
              ": out must be (B, M, H, Dh) of x's dtype");
  TORCH_CHECK(weight.numel() == H * Dh * group, op, ": weight must have H*Dh*group elements");
  c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  at::Tensor wt = weight.reshape({H * Dh, group}).to(at::kFloat).t().contiguous();
  at::Tensor y = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  ConvKVCompressParams p{x.const_data_ptr(), wt.const_data_ptr<float>(), y.data_ptr(), B, M, H, Dh,
                         x.stride(0), x.stride(1), x.stride(2), int32_t(group), frame_mode, frame_len};
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = LIVEACT_DISPATCH_FLOAT(x.scalar_type(), op,
                                           [&] { return convkv_compress_fwd_cuda<scalar_t>(p, stream); });
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
  if (!out.is_same(y)) out.copy_(y);
}

void convkv_cache_update_fwd_cuda_op(at::Tensor& cache_k, at::Tensor& cache_v, const at::Tensor& new_k,
                                     const at::Tensor& new_v, const at::Tensor& weight_k, const at::Tensor& weight_v,
                                     const c10::optional<at::Tensor>& k_scale, const c10::optional<at::Tensor>& v_scale,
                                     int64_t frame_len, int64_t group, c10::string_view mode, int64_t sinks,
                                     int64_t compressed, int64_t recent, int64_t block) {
  const char* op = "convkv_cache_update_fwd";
  TORCH_CHECK(cache_k.is_cuda() && cache_v.is_cuda() && new_k.is_cuda() && new_v.is_cuda(), op,
              ": tensors must be on CUDA");
  TORCH_CHECK(mode == "token" || mode == "frame", op, ": mode must be 'token' or 'frame'");
  TORCH_CHECK(group >= 2 && compressed >= 1 && sinks >= 0 && recent >= 0 && compressed + recent <= group &&
                  block >= 0, op, ": bad slot plan");
  const ConvKVSlots sl{int32_t(sinks), int32_t(compressed), int32_t(recent), int32_t(group)};
  const bool fp8 = cache_k.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK(cache_v.scalar_type() == cache_k.scalar_type() && new_v.scalar_type() == new_k.scalar_type() &&
                  (fp8 || new_k.scalar_type() == cache_k.scalar_type()), op, ": dtype mismatch");
  TORCH_CHECK(cache_k.dim() == 4 && cache_k.is_contiguous() && cache_v.is_contiguous() &&
                  cache_v.sizes() == cache_k.sizes(), op, ": caches must be contiguous (B, S*fl, H, Dh)");
  const int64_t B = cache_k.size(0), H = cache_k.size(2), Dh = cache_k.size(3), fl = frame_len;
  TORCH_CHECK(cache_k.size(1) == int64_t(sl.total()) * fl, op, ": cache does not hold ", sl.total(), " slots");
  const int64_t n_new = (block == 0 ? sl.new_dst() : sl.new_frames()) * fl;
  TORCH_CHECK(new_k.sizes() == at::IntArrayRef({B, n_new, H, Dh}) && new_v.sizes() == new_k.sizes(), op,
              ": new_k/new_v must be (", B, ", ", n_new, ", ", H, ", ", Dh, ")");
  // 16 channels per thread and head_dim/16 lanes per row inside one warp; 16-byte aligned rows.
  TORCH_CHECK(Dh % 16 == 0 && 32 % (Dh / 16) == 0, op, ": the CUDA kernel needs head_dim in {16, 32, 64, 128, 256, "
              "512}, got ", Dh, " (use backend='torch')");
  if (fp8) {
    TORCH_CHECK(k_scale.has_value() && v_scale.has_value() && k_scale->is_cuda() && v_scale->is_cuda() &&
                    k_scale->scalar_type() == at::kFloat && v_scale->scalar_type() == at::kFloat &&
                    k_scale->is_contiguous() && v_scale->is_contiguous() &&
                    k_scale->numel() == B * cache_k.size(1) * H && v_scale->numel() == k_scale->numel(),
                op, ": FP8 caches need contiguous float32 scales (B, S*fl, H, 1)");
  }
  c10::cuda::CUDAGuard guard(cache_k.device());
  at::Tensor nk = new_k.contiguous(), nv = new_v.contiguous();
  at::Tensor wk, wv;
  if (block >= 2) {
    TORCH_CHECK(weight_k.numel() == H * Dh * group && weight_v.numel() == H * Dh * group, op, ": bad weight size");
    wk = weight_k.reshape({H * Dh, group}).to(at::kFloat).t().contiguous();
    wv = weight_v.reshape({H * Dh, group}).to(at::kFloat).t().contiguous();
  }
  ConvKVCacheParams p;
  p.kv[0] = ConvKVCacheTensors{cache_k.data_ptr(), fp8 ? k_scale->data_ptr<float>() : nullptr, nk.const_data_ptr(),
                               wk.defined() ? wk.const_data_ptr<float>() : nullptr};
  p.kv[1] = ConvKVCacheTensors{cache_v.data_ptr(), fp8 ? v_scale->data_ptr<float>() : nullptr, nv.const_data_ptr(),
                               wv.defined() ? wv.const_data_ptr<float>() : nullptr};
  p.B = B; p.H = H; p.Dh = Dh; p.frame_len = fl; p.slots = sl; p.frame_mode = mode == "frame";
  p.block = int32_t(block > 2 ? 2 : block);
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = LIVEACT_DISPATCH_FLOAT(nk.scalar_type(), op, [&] {
    return fp8 ? convkv_cache_update_fwd_cuda<fp8e4m3_t, scalar_t>(p, stream)
               : convkv_cache_update_fwd_cuda<scalar_t, scalar_t>(p, stream);
  });
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace

TORCH_LIBRARY_IMPL(liveact, CUDA, m) {
  m.impl("convkv_compress_fwd", &convkv_compress_fwd_cuda_op);
  m.impl("convkv_cache_update_fwd", &convkv_cache_update_fwd_cuda_op);
}

}  // namespace liveact
