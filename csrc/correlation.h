// Shared declarations and argument checks of the cmasktrack correlation op.
//
//   out[b, k, l, y, x] = sum_c input1[b, c, y, x] * input2[b, c, y + d_k, x + d_l]
//
// with zero outside the map and d_k = dilation * k - floor(dilation * (patch - 1) / 2),
// k = 0 ... patch - 1 (for patch 16, dilation 2: -15, -13, ..., +15).
// Output shape (B, patch, patch, H, W).  The backward op returns the true gradient of this
// forward with respect to both inputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace cmasktrack {

// Offset of displacement index 0: d_k = dilation * k - displacement_offset(...).
inline int64_t displacement_offset(int64_t patch_size, int64_t dilation_patch) {
  return (dilation_patch * (patch_size - 1)) / 2;
}

inline void check_correlation_args(const at::Tensor& input1,
                                   const at::Tensor& input2,
                                   int64_t patch_size,
                                   int64_t dilation_patch) {
  TORCH_CHECK(input1.dim() == 4, "cmasktrack::correlation: input1 must be 4-D (B, C, H, W), got ",
              input1.dim(), "-D");
  TORCH_CHECK(input2.dim() == 4, "cmasktrack::correlation: input2 must be 4-D (B, C, H, W), got ",
              input2.dim(), "-D");
  TORCH_CHECK(input1.sizes() == input2.sizes(),
              "cmasktrack::correlation: input1 and input2 must have the same shape, got ",
              input1.sizes(), " and ", input2.sizes());
  TORCH_CHECK(input1.scalar_type() == input2.scalar_type(),
              "cmasktrack::correlation: input1 and input2 must have the same dtype, got ",
              input1.scalar_type(), " and ", input2.scalar_type());
  TORCH_CHECK(input1.device() == input2.device(),
              "cmasktrack::correlation: input1 and input2 must be on the same device, got ",
              input1.device(), " and ", input2.device());
  TORCH_CHECK(at::isFloatingType(input1.scalar_type()),
              "cmasktrack::correlation: inputs must be floating point, got ", input1.scalar_type());
  TORCH_CHECK(patch_size >= 1, "cmasktrack::correlation: patch_size must be >= 1, got ", patch_size);
  TORCH_CHECK(dilation_patch >= 1, "cmasktrack::correlation: dilation_patch must be >= 1, got ",
              dilation_patch);
}

inline void check_correlation_backward_args(const at::Tensor& grad_output,
                                            const at::Tensor& input1,
                                            const at::Tensor& input2,
                                            int64_t patch_size,
                                            int64_t dilation_patch) {
  check_correlation_args(input1, input2, patch_size, dilation_patch);
  TORCH_CHECK(grad_output.dim() == 5 && grad_output.size(0) == input1.size(0) &&
                  grad_output.size(1) == patch_size && grad_output.size(2) == patch_size &&
                  grad_output.size(3) == input1.size(2) && grad_output.size(4) == input1.size(3),
              "cmasktrack::correlation_backward: grad_output must have shape (B, patch, patch, H, W) = (",
              input1.size(0), ", ", patch_size, ", ", patch_size, ", ", input1.size(2), ", ",
              input1.size(3), "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == input1.device(),
              "cmasktrack::correlation_backward: grad_output must be on ", input1.device(), ", got ",
              grad_output.device());
}

}  // namespace cmasktrack
