// CPU implementation of cmasktrack::correlation and cmasktrack::correlation_backward.
//
// The inputs are copied once into zero-padded channels-last row buffers (correlation_cpu.h),
// then every output row (b, y) is computed independently with at::parallel_for.  The inner
// kernels (correlation_kernels.inc) are compiled three times on x86-64, for AVX-512F, for
// AVX2+FMA and for the baseline instruction set (only the baseline elsewhere), each variant
// through function target attributes so that the rest of the library stays baseline code; the
// variant is chosen once at load time: the widest one the running CPU supports, or the one
// named by the environment variable CMASKTRACK_CPU_ISA=generic|avx2|avx512 when the CPU
// supports it ("baseline" = "generic"; an unsupported or unknown name is ignored, and Python
// warns, cmasktrack/ops/_extension.py).
// float and double are computed in their own precision; half and bfloat16 inputs are computed
// in float and the results rounded back.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "correlation.h"
#include "cpu/correlation_cpu.h"

#if !defined(__GNUC__) && !defined(__clang__)
#error "The cmasktrack CPU kernels need GCC or Clang vector extensions."
#endif

#if defined(__x86_64__) || defined(__i386__)
#define CMT_HAVE_X86_VARIANTS 1
#define CMT_NS avx512
#define CMT_TARGET __attribute__((target("avx512f,avx2,fma")))
#define CMT_VBYTES 64
#include "cpu/correlation_kernels.inc"
#undef CMT_NS
#undef CMT_TARGET
#undef CMT_VBYTES

#define CMT_NS avx2
#define CMT_TARGET __attribute__((target("avx2,fma")))
#define CMT_VBYTES 32
#include "cpu/correlation_kernels.inc"
#undef CMT_NS
#undef CMT_TARGET
#undef CMT_VBYTES
#endif

#define CMT_NS generic
#define CMT_TARGET
#define CMT_VBYTES 16
#include "cpu/correlation_kernels.inc"
#undef CMT_NS
#undef CMT_TARGET
#undef CMT_VBYTES

namespace cmasktrack {
namespace cpu {
namespace {

// Kernel variants, widest first.
enum class Isa { kAvx512, kAvx2, kGeneric };
constexpr Isa kAllIsas[] = {Isa::kAvx512, Isa::kAvx2, Isa::kGeneric};

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kGeneric:
      break;
  }
  return "generic";
}

// Whether the variant is compiled in and the running CPU (and OS) can execute it.
bool isa_usable(Isa isa) {
  if (isa == Isa::kGeneric) {
    return true;
  }
#ifdef CMT_HAVE_X86_VARIANTS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == Isa::kAvx2) {
    return avx2;
  }
  // libgcc / compiler-rt report avx512f only when the OS saves the ZMM registers (XCR0).
  return avx2 && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

Isa detect_isa() {
  const char* forced = std::getenv("CMASKTRACK_CPU_ISA");
  if (forced != nullptr) {
    const char* name = std::strcmp(forced, "baseline") == 0 ? "generic" : forced;
    for (const Isa isa : kAllIsas) {
      if (std::strcmp(name, isa_name(isa)) == 0 && isa_usable(isa)) {
        return isa;
      }
    }
  }
  for (const Isa isa : kAllIsas) {
    if (isa_usable(isa)) {
      return isa;
    }
  }
  return Isa::kGeneric;
}

// "avx512,avx2,generic": the variants this CPU can run, widest first.
std::string usable_isas() {
  std::string names;
  for (const Isa isa : kAllIsas) {
    if (isa_usable(isa)) {
      names += names.empty() ? "" : ",";
      names += isa_name(isa);
    }
  }
  return names;
}

const Isa kIsa = detect_isa();
const std::string kUsableIsas = usable_isas();

// Runs the statement(s) with `isa` aliased to the namespace of the chosen kernel variant.
#ifdef CMT_HAVE_X86_VARIANTS
#define CMT_DISPATCH_ISA(...)        \
  do {                               \
    if (kIsa == Isa::kAvx512) {      \
      namespace isa = avx512;        \
      __VA_ARGS__;                   \
    } else if (kIsa == Isa::kAvx2) { \
      namespace isa = avx2;          \
      __VA_ARGS__;                   \
    } else {                         \
      namespace isa = generic;       \
      __VA_ARGS__;                   \
    }                                \
  } while (0)
#else
#define CMT_DISPATCH_ISA(...) \
  do {                        \
    namespace isa = generic;  \
    __VA_ARGS__;              \
  } while (0)
#endif

at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Rows per at::parallel_for task: enough that a task does >= ~2^18 multiply-adds (or copies
// 2^15 values), so that small problems run inline instead of waking the thread pool.
int64_t grain(int64_t work_per_row, int64_t min_work) {
  return std::max<int64_t>(1, min_work / std::max<int64_t>(work_per_row, 1));
}
constexpr int64_t kMinKernelWork = int64_t(1) << 18;
constexpr int64_t kMinCopyWork = int64_t(1) << 15;

constexpr int64_t kCopyBlock = 16;  // square blocks of the converting transposing copies

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols (vectorised).
template <typename T>
void transpose_copy(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                    int64_t cols) {
  CMT_DISPATCH_ISA(isa::transpose_copy<T>(src, src_stride, dst, dst_stride, rows, cols));
}

// Row buffer [B][H][width][Cp] of src (B, C, H, W, contiguous): pixel x of row (b, y) at
// column x + left, channels C .. Cp and the columns outside the map zero.
template <typename T, typename S>
void fill_row_buffer(T* dst, const S* src, const Geometry& g, int64_t width, int64_t left) {
  const int64_t HW = g.H * g.W;
  at::parallel_for(0, g.B * g.H, grain(width * g.Cp, kMinCopyWork), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.H;
      const int64_t y = row % g.H;
      T* drow = dst + row * width * g.Cp;
      const S* srow = src + b * g.C * HW + y * g.W;
      std::fill(drow, drow + left * g.Cp, T(0));
      std::fill(drow + (left + g.W) * g.Cp, drow + width * g.Cp, T(0));
      if constexpr (std::is_same_v<S, T>) {
        transpose_copy<T>(srow, HW, drow + left * g.Cp, g.Cp, g.C, g.W);
        for (int64_t x = 0; x < g.W; ++x) {
          std::fill(drow + (left + x) * g.Cp + g.C, drow + (left + x + 1) * g.Cp, T(0));
        }
        continue;
      }
      for (int64_t x0 = 0; x0 < g.W; x0 += kCopyBlock) {
        const int64_t x1 = std::min(g.W, x0 + kCopyBlock);
        for (int64_t c0 = 0; c0 < g.C; c0 += kCopyBlock) {
          const int64_t c1 = std::min(g.C, c0 + kCopyBlock);
          for (int64_t x = x0; x < x1; ++x) {
            T* d = drow + (left + x) * g.Cp;
            for (int64_t c = c0; c < c1; ++c) {
              d[c] = static_cast<T>(srow[c * HW + x]);
            }
          }
        }
        for (int64_t x = x0; x < x1; ++x) {
          std::fill(drow + (left + x) * g.Cp + g.C, drow + (left + x + 1) * g.Cp, T(0));
        }
      }
    }
  });
}

// dst (B, C, H, W, contiguous) from a gradient buffer [B][H][W][Cp].
template <typename S, typename T>
void unfill_row_buffer(S* dst, const T* src, const Geometry& g) {
  const int64_t HW = g.H * g.W;
  at::parallel_for(0, g.B * g.H, grain(g.W * g.C, kMinCopyWork), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.H;
      const int64_t y = row % g.H;
      const T* srow = src + row * g.W * g.Cp;
      S* drow = dst + b * g.C * HW + y * g.W;
      if constexpr (std::is_same_v<S, T>) {
        transpose_copy<T>(srow, g.Cp, drow, HW, g.W, g.C);
        continue;
      }
      for (int64_t c0 = 0; c0 < g.C; c0 += kCopyBlock) {
        const int64_t c1 = std::min(g.C, c0 + kCopyBlock);
        for (int64_t x0 = 0; x0 < g.W; x0 += kCopyBlock) {
          const int64_t x1 = std::min(g.W, x0 + kCopyBlock);
          for (int64_t c = c0; c < c1; ++c) {
            for (int64_t x = x0; x < x1; ++x) {
              drow[c * HW + x] = static_cast<S>(srow[x * g.Cp + c]);
            }
          }
        }
      }
    }
  });
}

// grad_output (B, k, l, H, W, contiguous) -> [B][H][k][g_width][l], zero outside the map.
template <typename T, typename S>
void fill_grad_buffer(T* dst, const S* src, const Geometry& g) {
  const int64_t HW = g.H * g.W;
  const int64_t P = g.P;
  at::parallel_for(0, g.B * g.H, grain(P * g.g_width * P, kMinCopyWork), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.H;
      const int64_t y = row % g.H;
      for (int64_t k = 0; k < P; ++k) {
        T* drow = dst + (row * P + k) * g.g_width * P;
        const S* srow = src + (b * P + k) * P * HW + y * g.W;
        std::fill(drow, drow + g.g_left * P, T(0));
        std::fill(drow + (g.g_left + g.W) * P, drow + g.g_width * P, T(0));
        if constexpr (std::is_same_v<S, T>) {
          transpose_copy<T>(srow, HW, drow + g.g_left * P, P, P, g.W);
          continue;
        }
        for (int64_t x0 = 0; x0 < g.W; x0 += kCopyBlock) {
          const int64_t x1 = std::min(g.W, x0 + kCopyBlock);
          for (int64_t x = x0; x < x1; ++x) {
            for (int64_t l = 0; l < P; ++l) {
              drow[(g.g_left + x) * P + l] = static_cast<T>(srow[l * HW + x]);
            }
          }
        }
      }
    }
  });
}

template <typename T>
void forward_rows(T* out, const T* a1, const T* a2, const Geometry& g) {
  at::parallel_for(0, g.B * g.H, grain(g.P * g.P * g.W * g.Cv, kMinKernelWork), [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(g.P * g.Ws);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.H;
      const int64_t y = row % g.H;
      CMT_DISPATCH_ISA(isa::forward_row<T>(out, a1, a2, g, b, y, scratch.data()));
    }
  });
}

template <typename T, bool kInput1>
void backward_rows(T* grad_buffer, const T* grad, const T* rowbuf, const Geometry& g) {
  at::parallel_for(0, g.B * g.H, grain(g.P * g.P * g.W * g.Cv, kMinKernelWork), [&](int64_t begin, int64_t end) {
    std::vector<const T*> rows(g.P), grads(g.P);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / g.H;
      const int64_t y = r % g.H;
      CMT_DISPATCH_ISA(isa::backward_row<T, kInput1 ? isa::Grad::kInput1 : isa::Grad::kInput2>(
          grad_buffer, grad, rowbuf, g, b, y, rows.data(), grads.data()));
    }
  });
}

// Row buffers of both inputs, in the compute type.
std::pair<at::Tensor, at::Tensor> row_buffers(const at::Tensor& input1, const at::Tensor& input2,
                                              const Geometry& g, at::ScalarType ctype) {
  const at::Tensor x1 = input1.contiguous();
  const at::Tensor x2 = input2.contiguous();
  at::Tensor a1 = at::empty({g.B, g.H, g.a1_width, g.Cp}, input1.options().dtype(ctype));
  at::Tensor a2 = at::empty({g.B, g.H, g.a2_width, g.Cp}, input1.options().dtype(ctype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "cmasktrack_rows", [&] {
    using S = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(ctype, "cmasktrack_rows", [&] {
      fill_row_buffer<scalar_t, S>(a1.data_ptr<scalar_t>(), x1.const_data_ptr<S>(), g,
                                   g.a1_width, g.a1_left);
      fill_row_buffer<scalar_t, S>(a2.data_ptr<scalar_t>(), x2.const_data_ptr<S>(), g,
                                   g.a2_width, g.a2_left);
    });
  });
  return {a1, a2};
}

at::Tensor correlation_cpu(const at::Tensor& input1, const at::Tensor& input2,
                           int64_t patch_size, int64_t dilation_patch) {
  check_correlation_args(input1, input2, patch_size, dilation_patch);
  const at::ScalarType dtype = input1.scalar_type();
  const at::ScalarType ctype = compute_type(dtype);
  const int64_t B = input1.size(0), C = input1.size(1), H = input1.size(2), W = input1.size(3);
  const Geometry g = make_geometry(B, C, H, W, patch_size, dilation_patch,
                                   static_cast<int64_t>(c10::elementSize(ctype)));
  if (B * H * W == 0 || C == 0) {
    return at::zeros({B, patch_size, patch_size, H, W}, input1.options());
  }
  at::Tensor out = at::empty({B, patch_size, patch_size, H, W}, input1.options().dtype(ctype));
  const auto [a1, a2] = row_buffers(input1, input2, g, ctype);
  AT_DISPATCH_FLOATING_TYPES(ctype, "cmasktrack_correlation_cpu", [&] {
    forward_rows<scalar_t>(out.data_ptr<scalar_t>(), a1.const_data_ptr<scalar_t>(),
                           a2.const_data_ptr<scalar_t>(), g);
  });
  return dtype == ctype ? out : out.to(dtype);
}

std::tuple<at::Tensor, at::Tensor> correlation_backward_cpu(const at::Tensor& grad_output,
                                                            const at::Tensor& input1,
                                                            const at::Tensor& input2,
                                                            int64_t patch_size,
                                                            int64_t dilation_patch) {
  check_correlation_backward_args(grad_output, input1, input2, patch_size, dilation_patch);
  TORCH_CHECK(grad_output.scalar_type() == input1.scalar_type(),
              "cmasktrack::correlation_backward: grad_output must have dtype ",
              input1.scalar_type(), ", got ", grad_output.scalar_type());
  const at::ScalarType dtype = input1.scalar_type();
  const at::ScalarType ctype = compute_type(dtype);
  const int64_t B = input1.size(0), C = input1.size(1), H = input1.size(2), W = input1.size(3);
  const Geometry g = make_geometry(B, C, H, W, patch_size, dilation_patch,
                                   static_cast<int64_t>(c10::elementSize(ctype)));
  if (B * H * W == 0 || C == 0) {
    return {at::zeros_like(input1, at::MemoryFormat::Contiguous),
            at::zeros_like(input2, at::MemoryFormat::Contiguous)};
  }
  const auto [a1, a2] = row_buffers(input1, input2, g, ctype);
  const at::Tensor go = grad_output.contiguous();
  at::Tensor grad = at::empty({B, H, patch_size, g.g_width, patch_size},
                              input1.options().dtype(ctype));
  at::Tensor grad1 = at::empty({B, H, W, g.Cp}, input1.options().dtype(ctype));
  at::Tensor grad2 = at::empty({B, H, W, g.Cp}, input1.options().dtype(ctype));
  at::Tensor result1 = at::empty({B, C, H, W}, input1.options());
  at::Tensor result2 = at::empty({B, C, H, W}, input1.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "cmasktrack_correlation_backward_cpu", [&] {
    using S = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(ctype, "cmasktrack_correlation_backward_cpu", [&] {
      fill_grad_buffer<scalar_t, S>(grad.data_ptr<scalar_t>(), go.const_data_ptr<S>(), g);
      backward_rows<scalar_t, true>(grad1.data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(),
                                    a2.const_data_ptr<scalar_t>(), g);
      backward_rows<scalar_t, false>(grad2.data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(),
                                     a1.const_data_ptr<scalar_t>(), g);
      unfill_row_buffer<S, scalar_t>(result1.data_ptr<S>(), grad1.const_data_ptr<scalar_t>(), g);
      unfill_row_buffer<S, scalar_t>(result2.data_ptr<S>(), grad2.const_data_ptr<scalar_t>(), g);
    });
  });
  return {result1, result2};
}

}  // namespace
}  // namespace cpu
}  // namespace cmasktrack

extern "C" const char* cmasktrack_cpu_kernel_isa() {
  return cmasktrack::cpu::isa_name(cmasktrack::cpu::kIsa);
}

extern "C" const char* cmasktrack_cpu_kernel_isas() {
  return cmasktrack::cpu::kUsableIsas.c_str();
}

TORCH_LIBRARY_IMPL(cmasktrack, CPU, m) {
  m.impl("correlation", &cmasktrack::cpu::correlation_cpu);
  m.impl("correlation_backward", &cmasktrack::cpu::correlation_backward_cpu);
}
