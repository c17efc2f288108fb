// CUDA implementation of cmasktrack::correlation and cmasktrack::correlation_backward.
//
// Straightforward gather kernels, one thread per output element, no atomics:
//   forward       out[b, k, l, y, x]   = sum_c in1[b, c, y, x] * in2[b, c, y + d_k, x + d_l]
//   grad input1   g1[b, c, y, x]       = sum_{k,l} go[b, k, l, y, x] * in2[b, c, y + d_k, x + d_l]
//   grad input2   g2[b, c, y', x']     = sum_{k,l} go[b, k, l, y' - d_k, x' - d_l]
//                                                 * in1[b, c, y' - d_k, x' - d_l]
// (terms whose positions fall outside the map are zero).  Consecutive threads handle
// consecutive x, so global reads are coalesced.  Sums are accumulated in float for
// half/bfloat16/float and in double for double.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "correlation.h"

namespace cmasktrack {
namespace cuda {
namespace {

constexpr int kThreads = 256;

struct Shape {
  int64_t B, C, H, W;
  int64_t P, dil, off;  // d_k = dil * k - off
};

template <typename scalar_t>
__global__ void correlation_forward_kernel(const scalar_t* __restrict__ in1,
                                           const scalar_t* __restrict__ in2,
                                           scalar_t* __restrict__ out, Shape s, int64_t n) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  const int64_t HW = s.H * s.W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // idx = (((b * P + k) * P + l) * H + y) * W + x
    const int64_t x = idx % s.W;
    int64_t t = idx / s.W;
    const int64_t y = t % s.H;
    t /= s.H;
    const int64_t l = t % s.P;
    t /= s.P;
    const int64_t k = t % s.P;
    const int64_t b = t / s.P;
    const int64_t y2 = y + s.dil * k - s.off;
    const int64_t x2 = x + s.dil * l - s.off;
    acc_t sum = 0;
    if (y2 >= 0 && y2 < s.H && x2 >= 0 && x2 < s.W) {
      const scalar_t* p1 = in1 + b * s.C * HW + y * s.W + x;
      const scalar_t* p2 = in2 + b * s.C * HW + y2 * s.W + x2;
      for (int64_t c = 0; c < s.C; ++c) {
        sum += static_cast<acc_t>(p1[c * HW]) * static_cast<acc_t>(p2[c * HW]);
      }
    }
    out[idx] = static_cast<scalar_t>(sum);
  }
}

// kInput1: grad of input1 (reads input2 at the displaced position);
// otherwise grad of input2 (reads input1 and grad_output at the inversely displaced position).
template <typename scalar_t, bool kInput1>
__global__ void correlation_backward_kernel(const scalar_t* __restrict__ grad_output,
                                            const scalar_t* __restrict__ other,
                                            scalar_t* __restrict__ grad, Shape s, int64_t n) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  const int64_t HW = s.H * s.W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // idx = ((b * C + c) * H + y) * W + x
    const int64_t x = idx % s.W;
    int64_t t = idx / s.W;
    const int64_t y = t % s.H;
    t /= s.H;
    const int64_t c = t % s.C;
    const int64_t b = t / s.C;
    const scalar_t* other_bc = other + (b * s.C + c) * HW;
    const scalar_t* go_b = grad_output + b * s.P * s.P * HW;
    acc_t sum = 0;
    for (int64_t k = 0; k < s.P; ++k) {
      const int64_t dk = s.dil * k - s.off;
      // kInput1: data at row y + dk, grad_output at row y.
      // input2: data and grad_output at row y - dk.
      const int64_t yd = kInput1 ? y + dk : y - dk;
      if (yd < 0 || yd >= s.H) {
        continue;
      }
      const int64_t yg = kInput1 ? y : yd;
      for (int64_t l = 0; l < s.P; ++l) {
        const int64_t dl = s.dil * l - s.off;
        const int64_t xd = kInput1 ? x + dl : x - dl;
        if (xd < 0 || xd >= s.W) {
          continue;
        }
        const int64_t xg = kInput1 ? x : xd;
        sum += static_cast<acc_t>(go_b[(k * s.P + l) * HW + yg * s.W + xg]) *
               static_cast<acc_t>(other_bc[yd * s.W + xd]);
      }
    }
    grad[idx] = static_cast<scalar_t>(sum);
  }
}

unsigned int grid_size(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  // Grid-stride loops cover the rest; 2^16 blocks keep every GPU busy.
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65536));
}

Shape make_shape(const at::Tensor& input1, int64_t patch_size, int64_t dilation_patch) {
  return Shape{input1.size(0), input1.size(1), input1.size(2), input1.size(3),
               patch_size,     dilation_patch, displacement_offset(patch_size, dilation_patch)};
}

at::Tensor correlation_cuda(const at::Tensor& input1, const at::Tensor& input2,
                            int64_t patch_size, int64_t dilation_patch) {
  check_correlation_args(input1, input2, patch_size, dilation_patch);
  TORCH_CHECK(input1.is_cuda(), "cmasktrack::correlation (CUDA): inputs must be CUDA tensors");
  const c10::cuda::CUDAGuard device_guard(input1.device());
  const Shape s = make_shape(input1, patch_size, dilation_patch);
  at::Tensor out = at::empty({s.B, s.P, s.P, s.H, s.W}, input1.options());
  const int64_t n = out.numel();
  if (n == 0) {
    return out;
  }
  const at::Tensor in1 = input1.contiguous();
  const at::Tensor in2 = input2.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in1.scalar_type(),
                                  "cmasktrack_correlation_cuda", [&] {
    correlation_forward_kernel<scalar_t><<<grid_size(n), kThreads, 0, stream>>>(
        in1.const_data_ptr<scalar_t>(), in2.const_data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), s, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> correlation_backward_cuda(const at::Tensor& grad_output,
                                                             const at::Tensor& input1,
                                                             const at::Tensor& input2,
                                                             int64_t patch_size,
                                                             int64_t dilation_patch) {
  check_correlation_backward_args(grad_output, input1, input2, patch_size, dilation_patch);
  TORCH_CHECK(input1.is_cuda(), "cmasktrack::correlation_backward (CUDA): inputs must be CUDA tensors");
  TORCH_CHECK(grad_output.scalar_type() == input1.scalar_type(),
              "cmasktrack::correlation_backward: grad_output must have dtype ",
              input1.scalar_type(), ", got ", grad_output.scalar_type());
  const c10::cuda::CUDAGuard device_guard(input1.device());
  const Shape s = make_shape(input1, patch_size, dilation_patch);
  at::Tensor grad1 = at::empty({s.B, s.C, s.H, s.W}, input1.options());
  at::Tensor grad2 = at::empty({s.B, s.C, s.H, s.W}, input1.options());
  const int64_t n = grad1.numel();
  if (n == 0) {
    return {grad1, grad2};
  }
  const at::Tensor go = grad_output.contiguous();
  const at::Tensor in1 = input1.contiguous();
  const at::Tensor in2 = input2.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in1.scalar_type(),
                                  "cmasktrack_correlation_backward_cuda", [&] {
    correlation_backward_kernel<scalar_t, true><<<grid_size(n), kThreads, 0, stream>>>(
        go.const_data_ptr<scalar_t>(), in2.const_data_ptr<scalar_t>(),
        grad1.data_ptr<scalar_t>(), s, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    correlation_backward_kernel<scalar_t, false><<<grid_size(n), kThreads, 0, stream>>>(
        go.const_data_ptr<scalar_t>(), in1.const_data_ptr<scalar_t>(),
        grad2.data_ptr<scalar_t>(), s, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad1, grad2};
}

}  // namespace
}  // namespace cuda
}  // namespace cmasktrack

extern "C" int cmasktrack_cuda_compiled_version() {
  return CUDART_VERSION;
}

TORCH_LIBRARY_IMPL(cmasktrack, CUDA, m) {
  m.impl("correlation", &cmasktrack::cuda::correlation_cuda);
  m.impl("correlation_backward", &cmasktrack::cuda::correlation_backward_cuda);
}
