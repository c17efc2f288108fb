// Standalone check of the CPU correlation kernels (csrc/cpu/correlation_kernels.inc) at one
// vector width, without ATen: tests/test_correlation.py compiles it with
// -DHARNESS_VBYTES=16|32|64 (plus -mavx512f etc. when the CPU can run them) and runs it.
// With 64 and no AVX-512 flags the compiler lowers the 64-byte vectors to narrower
// instructions, so the AVX-512 variant's source (16 float lanes, the 16 x 16 transpose) is
// checked on any x86-64 or Arm CPU.
//
// Everything around the kernels is written here with plain loops: the zero-padded row
// buffers, the re-laid-out grad_output and a naive correlation and gradient as the
// reference.  Prints "ok" and exits 0 when every result matches.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/correlation_cpu.h"

#ifndef HARNESS_VBYTES
#error "compile with -DHARNESS_VBYTES=16, 32 or 64"
#endif
#define CMT_NS harness
#define CMT_TARGET
#define CMT_VBYTES HARNESS_VBYTES
#include "cpu/correlation_kernels.inc"

using cmasktrack::cpu::Geometry;
using cmasktrack::cpu::make_geometry;

namespace {

int failures = 0;

template <typename T>
void expect_close(const char* what, const std::vector<T>& got, const std::vector<double>& want,
                  double tol, const char* case_name) {
  double scale = 1e-30, worst = 0;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= tol * scale)) {  // also catches NaN
      worst = std::max(worst, std::isnan(err) ? INFINITY : err);
    }
  }
  if (worst > 0) {
    std::printf("FAIL %s %s: max error %g (scale %g)\n", case_name, what, worst, scale);
    ++failures;
  }
}

template <typename T>
void check_transpose(int64_t rows, int64_t cols) {
  const int64_t src_stride = cols + 3, dst_stride = rows + 5;
  std::vector<T> src(rows * src_stride), dst(cols * dst_stride, T(-7));
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<T>(i % 97) - T(40);
  harness::transpose_copy<T>(src.data(), src_stride, dst.data(), dst_stride, rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      if (dst[j * dst_stride + i] != src[i * src_stride + j]) {
        std::printf("FAIL transpose %lld x %lld (%zu-byte T) at (%lld, %lld)\n", (long long)rows,
                    (long long)cols, sizeof(T), (long long)i, (long long)j);
        ++failures;
        return;
      }
    }
  }
}

// One case: forward and both gradients of the kernels against naive loops.
template <typename T>
void check_case(int64_t B, int64_t C, int64_t H, int64_t W, int64_t P, int64_t dil, unsigned seed) {
  char name[96];
  std::snprintf(name, sizeof(name), "B%lld C%lld H%lld W%lld P%lld dil%lld %zu-byte", (long long)B,
                (long long)C, (long long)H, (long long)W, (long long)P, (long long)dil, sizeof(T));
  const Geometry g = make_geometry(B, C, H, W, P, dil, sizeof(T));
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  auto at4 = [&](int64_t b, int64_t c, int64_t y, int64_t x) { return ((b * C + c) * H + y) * W + x; };
  std::vector<double> in1(B * C * H * W), in2(B * C * H * W), go(B * P * P * H * W);
  for (double& v : in1) v = static_cast<double>(static_cast<T>(normal(rng)));
  for (double& v : in2) v = static_cast<double>(static_cast<T>(normal(rng)));
  for (double& v : go) v = static_cast<double>(static_cast<T>(normal(rng)));
  auto disp = [&](int64_t k) { return dil * k - (dil * (P - 1)) / 2; };

  // Row buffers [B][H][width][Cp], pixel x at column x + left, zero elsewhere.
  auto row_buffer = [&](const std::vector<double>& in, int64_t width, int64_t left) {
    std::vector<T> buf(B * H * width * g.Cp, T(0));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
          for (int64_t c = 0; c < C; ++c)
            buf[((b * H + y) * width + x + left) * g.Cp + c] = static_cast<T>(in[at4(b, c, y, x)]);
    return buf;
  };
  const std::vector<T> a1 = row_buffer(in1, g.a1_width, g.a1_left);
  const std::vector<T> a2 = row_buffer(in2, g.a2_width, g.a2_left);

  // Forward.
  std::vector<T> out(B * P * P * H * W, T(NAN)), scratch(P * g.Ws);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < H; ++y) harness::forward_row<T>(out.data(), a1.data(), a2.data(), g, b, y, scratch.data());
  std::vector<double> ref(out.size(), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < P; ++k)
      for (int64_t l = 0; l < P; ++l)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) {
            const int64_t y2 = y + disp(k), x2 = x + disp(l);
            double s = 0;
            if (y2 >= 0 && y2 < H && x2 >= 0 && x2 < W)
              for (int64_t c = 0; c < C; ++c) s += in1[at4(b, c, y, x)] * in2[at4(b, c, y2, x2)];
            ref[(((b * P + k) * P + l) * H + y) * W + x] = s;
          }
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  expect_close("forward", out, ref, tol, name);

  // grad_output re-laid out as [B][H][k][g_width][l], zero outside the map.
  std::vector<T> grad(B * H * P * g.g_width * P, T(0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < P; ++k)
      for (int64_t l = 0; l < P; ++l)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x)
            grad[(((b * H + y) * P + k) * g.g_width + x + g.g_left) * P + l] =
                static_cast<T>(go[(((b * P + k) * P + l) * H + y) * W + x]);
  std::vector<const T*> rows(P), grads(P);
  for (int which = 0; which < 2; ++which) {
    std::vector<T> buf(B * H * W * g.Cp, T(NAN));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t y = 0; y < H; ++y) {
        if (which == 0)
          harness::backward_row<T, harness::Grad::kInput1>(buf.data(), grad.data(), a2.data(), g, b, y,
                                                           rows.data(), grads.data());
        else
          harness::backward_row<T, harness::Grad::kInput2>(buf.data(), grad.data(), a1.data(), g, b, y,
                                                           rows.data(), grads.data());
      }
    std::vector<T> got(B * C * H * W);
    std::vector<double> want(B * C * H * W, 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) got[at4(b, c, y, x)] = buf[((b * H + y) * W + x) * g.Cp + c];
    // d out[b,k,l,y,x] / d in1[b,c,y,x] = in2[b,c,y+dk,x+dl]; / d in2[b,c,y+dk,x+dl] = in1[b,c,y,x].
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < P; ++k)
        for (int64_t l = 0; l < P; ++l)
          for (int64_t y = 0; y < H; ++y)
            for (int64_t x = 0; x < W; ++x) {
              const int64_t y2 = y + disp(k), x2 = x + disp(l);
              if (y2 < 0 || y2 >= H || x2 < 0 || x2 >= W) continue;
              const double gv = go[(((b * P + k) * P + l) * H + y) * W + x];
              for (int64_t c = 0; c < C; ++c) {
                if (which == 0)
                  want[at4(b, c, y, x)] += gv * in2[at4(b, c, y2, x2)];
                else
                  want[at4(b, c, y2, x2)] += gv * in1[at4(b, c, y, x)];
              }
            }
    expect_close(which == 0 ? "grad input1" : "grad input2", got, want, tol, name);
  }
}

template <typename T>
void check_all() {
  constexpr int64_t N = CMT_VBYTES / sizeof(T);
  for (int64_t rows : {int64_t(1), N - 1, N, N + 1, 2 * N + 3})
    for (int64_t cols : {int64_t(1), N - 1, N, 3 * N + 2}) check_transpose<T>(rows, cols);
  // (B, C, H, W, patch, dilation): the real geometry (patch 16, dilation 2) with odd sizes and
  // channel counts below, at and above a multiple of the lanes and of the backward's
  // channel block; even / odd / wider-than-the-map patches; dilations 1 to 3.
  const int64_t cases[][6] = {
      {1, 33, 9, 23, 16, 2}, {2, 16, 5, 17, 16, 2}, {1, 48, 4, 19, 5, 1}, {2, 7, 6, 9, 3, 1},
      {1, 50, 5, 11, 4, 2},  {1, 3, 2, 3, 7, 1},    {1, 17, 7, 12, 2, 3}, {1, 1, 1, 1, 1, 1},
  };
  unsigned seed = 1;
  for (const auto& c : cases) check_case<T>(c[0], c[1], c[2], c[3], c[4], c[5], seed++);
}

}  // namespace

int main() {
  check_all<float>();
  check_all<double>();
  if (failures == 0) {
    std::printf("ok (%d-byte vectors)\n", CMT_VBYTES);
    return 0;
  }
  return 1;
}
