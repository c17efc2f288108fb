// Internal layout of the CPU correlation kernels (csrc/cpu/correlation_cpu.cpp).
//
// The kernels work on channels-last copies of the inputs, "row buffers" [B][H][width][Cp]:
// every pixel's channel vector is contiguous, so each correlation value is a dot product of
// two contiguous vectors and every kernel vectorises over channels.  The rows are zero-padded
// in x (a pixel x lives at column x + left) so that the kernels never test borders in x, and
// channels are zero-padded to Cv, a multiple of 64 bytes, so that no vector loop has a tail.
// The pixel stride Cp >= Cv is an odd number of 64-byte lines: with dilation 2 the kernels
// walk every other pixel, and a stride of a power of two lines would crowd those pixels into
// a fraction of the L1 cache sets.
// The gradient of the output is re-laid out as [B][H][patch (k)][width][patch (l)].
#pragma once

#include <algorithm>
#include <cstdint>

namespace cmasktrack {
namespace cpu {

// Register blocking of the kernels; the row padding below depends on them.
constexpr int kForwardXBlock = 3;   // pixels (dilation apart) per forward tile
constexpr int kForwardLBlock = 4;   // horizontal displacements per forward tile
constexpr int kBackwardXBlock = 4;  // pixels (dilation apart) per backward tile
constexpr int kBackwardCBlock = 3;  // channel vectors per backward tile

struct Geometry {
  int64_t B = 0, C = 0, H = 0, W = 0;
  int64_t Cv = 0;                     // channels the kernels compute over (C rounded up)
  int64_t Cp = 0;                     // pixel stride of the row buffers (>= Cv)
  int64_t Ws = 0;                     // row stride of the forward's per-row output scratch
  int64_t P = 0, dil = 0, off = 0;    // patch, dilation, d_k = dil * k - off
  int64_t a1_width = 0, a1_left = 0;  // row buffer of input1
  int64_t a2_width = 0, a2_left = 0;  // row buffer of input2
  int64_t g_width = 0, g_left = 0;    // re-laid-out grad_output

  int64_t disp(int64_t k) const { return dil * k - off; }
};

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// Smallest stride >= n (elements) that is an odd number of 64-byte lines.
inline int64_t odd_line_stride(int64_t n, int64_t element_size) {
  const int64_t per_line = 64 / element_size;
  const int64_t lines = (n + per_line - 1) / per_line;
  return (lines % 2 == 1 ? lines : lines + 1) * per_line;
}

inline Geometry make_geometry(int64_t B, int64_t C, int64_t H, int64_t W, int64_t patch,
                              int64_t dilation, int64_t element_size) {
  Geometry g;
  g.B = B;
  g.C = C;
  g.H = H;
  g.W = W;
  g.Cv = round_up(C, 64 / element_size);
  g.Cp = odd_line_stride(g.Cv, element_size);
  g.Ws = odd_line_stride(W, element_size);
  g.P = patch;
  g.dil = dilation;
  g.off = (dilation * (patch - 1)) / 2;
  const int64_t d_max = g.disp(patch - 1);                                 // >= 0
  const int64_t d_virtual = g.disp(round_up(patch, kForwardLBlock) - 1);   // last l of a tile
  // input1: the forward reads pixels x .. x + (XB - 1) * dil; the input2 gradient reads
  // x' - d_l for x' < W + (XB - 1) * dil.
  g.a1_left = d_max;
  const int64_t a1_right =
      std::max<int64_t>((kForwardXBlock - 1) * dilation, g.off + (kBackwardXBlock - 1) * dilation);
  g.a1_width = g.a1_left + W + a1_right;
  // input2: read at x + d_l for x < W + (XB - 1) * dil and every (virtual) l.
  g.a2_left = g.off;
  const int64_t a2_right = std::max<int64_t>(d_virtual + (kForwardXBlock - 1) * dilation,
                                             d_max + (kBackwardXBlock - 1) * dilation);
  g.a2_width = g.a2_left + W + std::max<int64_t>(a2_right, 0);
  // grad_output: read at x for x < W + (XB - 1) * dil and at x' - d_l.
  g.g_left = d_max;
  g.g_width = g.g_left + W + g.off + (kBackwardXBlock - 1) * dilation;
  return g;
}

}  // namespace cpu
}  // namespace cmasktrack
