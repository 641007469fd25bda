// Fused hard forward of an FFF whose leaf weights are stored compactly (bfloat16, or int8 with
// float32 scales), on the CPU: the layer fastff.quantize makes (fastff/layers/fff_quantized.py).
//
// As fff_hard_cpu.cpp, one pass per input row: walk the tree with the float32 node weights
// (fff_hard_cpu.h's walk, so every row reaches exactly the leaf the float32 kernel reaches), then
// evaluate the one leaf, reading its weights in their compact form and widening them to float32
// in registers (bfloat16: a 16-bit shift; int8: a sign extension and a conversion). Nothing is
// dequantized in memory; all products and sums are float32. Per leaf:
//
//   hidden[k] = s1[k] * sum_i x[i] * q1[k, i] + b1[k]        (s1 = 1 for bfloat16)
//   y[c]      = s2[c] * sum_j act(hidden[j]) * q2[j, c] + b2[c]
//
// so a symmetric scale per hidden unit (first matrix) or per output feature (second matrix)
// multiplies a finished float32 sum once. Hidden units that the activation leaves at exactly 0
// skip their row of the second matrix (0 * a finite weight adds nothing; fastff.quantize refuses
// non-finite weights), which saves reading about half of it after a ReLU.
//
// Shapes: x (B, D) float32, node_weights (N, D), node_biases (N, 1) float32, w1 (L, l, D)
// neuron-major and w2 (L, l, O), both bfloat16 or both int8, w1_scale (L, l) and w2_scale (L, O)
// float32 (int8 only; None for bfloat16), b1s (L, l), b2s (L, O) float32, all contiguous.
// Registered as torch.ops.fastff.fff_hard_forward_compact(x, node_weights, node_biases, w1,
// w1_scale, b1s, w2, w2_scale, b2s, depth, activation, activation_param) -> (B, O) float32.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "fff_hard_cpu.h"

namespace {

using namespace fastff_hard;

using F = Simd<float>::vec;
constexpr int64_t W = Simd<float>::width;
using U16 = Simd<uint16_t, FASTFF_VECTOR_BYTES / 2>::vec;  // W bfloat16 weights
using U32 = Simd<uint32_t>::vec;
using I8 = Simd<int8_t, FASTFF_VECTOR_BYTES / 4>::vec;  // W int8 weights
using I32 = Simd<int32_t>::vec;

// W compact weights from p (unaligned) as one float32 vector. bfloat16 is the upper half of a
// float32, so widening is exact.
// bfloat16: a zero extension to 32 bits and a shift (the intrinsics keep it one vpmovzxwd per
// vector: GCC splits the generic form into halves).
inline F widen(const uint16_t* p) {
#if defined(__AVX512F__)
  const __m512i bits =
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16);
#elif defined(__AVX2__)
  const __m256i bits =
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16);
#else
  U16 half;
  std::memcpy(&half, p, sizeof(half));
  const U32 bits = __builtin_convertvector(half, U32) << 16;
#endif
  F f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// int8: a sign extension to int32 and a conversion (GCC scalarises the generic form, so the
// x86 intrinsics spell out vpmovsxbd + vcvtdq2ps where they exist).
inline F widen(const int8_t* p) {
#if defined(__AVX512F__)
  const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
#elif defined(__AVX2__)
  const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
#else
  I8 q;
  std::memcpy(&q, p, sizeof(q));
  const F f = __builtin_convertvector(__builtin_convertvector(q, I32), F);
#endif
  F out;
  std::memcpy(&out, &f, sizeof(out));
  return out;
}

inline float widen_one(uint16_t half) {
  const uint32_t bits = uint32_t(half) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float widen_one(int8_t q) { return float(q); }

// sum_i x[i] * q[i] over n compact weights, float32.
template <typename Q>
inline float compact_dot(const float* x, const Q* q, int64_t n) {
  F s0 = {}, s1 = {};
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    s0 += load(x + i) * widen(q + i);
    s1 += load(x + i + W) * widen(q + i + W);
  }
  for (; i + W <= n; i += W) s0 += load(x + i) * widen(q + i);
  float sum = sum_lanes<float>(s0 + s1);
  for (; i < n; ++i) sum += x[i] * widen_one(q[i]);
  return sum;
}

// hidden = scale * (x @ q1^T) + b1 with q1 (l, D) neuron-major: four neurons at a time share each
// load of x, two accumulators each (eight chains in flight). scale is null for bfloat16.
template <typename Q>
inline void compact_hidden(const float* x, const Q* q1, const float* scale, const float* b1,
                           int64_t d, int64_t l, float* hidden) {
  int64_t k = 0;
  for (; k + 4 <= l; k += 4) {
    const Q* w = q1 + k * d;
    F a[4] = {}, b[4] = {};
    int64_t i = 0;
    for (; i + 2 * W <= d; i += 2 * W) {
      const F x0 = load(x + i), x1 = load(x + i + W);
      for (int64_t r = 0; r < 4; ++r) {
        a[r] += x0 * widen(w + r * d + i);
        b[r] += x1 * widen(w + r * d + i + W);
      }
    }
    for (; i + W <= d; i += W) {
      const F x0 = load(x + i);
      for (int64_t r = 0; r < 4; ++r) a[r] += x0 * widen(w + r * d + i);
    }
    for (int64_t r = 0; r < 4; ++r) {
      float sum = sum_lanes<float>(a[r] + b[r]);
      for (int64_t t = i; t < d; ++t) sum += x[t] * widen_one(w[r * d + t]);
      hidden[k + r] = (scale ? sum * scale[k + r] : sum) + b1[k + r];
    }
  }
  for (; k < l; ++k) {
    const float sum = compact_dot(x, q1 + k * d, d);
    hidden[k] = (scale ? sum * scale[k] : sum) + b1[k];
  }
}

// y = scale * (sum over the listed hidden units j of hidden[j] * q2[j, :]) + b2, q2 (l, O)
// row-major: output columns in blocks of four vectors, then single vectors, then scalars.
template <typename Q>
inline void compact_output(const float* hidden, const int64_t* units, int64_t n_units,
                           const Q* q2, const float* scale, const float* b2, int64_t o,
                           float* y) {
  int64_t c0 = 0;
  for (; c0 + 4 * W <= o; c0 += 4 * W) {
    F acc[4] = {};
    for (int64_t u = 0; u < n_units; ++u) {
      const int64_t j = units[u];
      const float hj = hidden[j];
      const Q* row = q2 + j * o + c0;
      for (int64_t c = 0; c < 4; ++c) acc[c] += hj * widen(row + c * W);
    }
    for (int64_t c = 0; c < 4; ++c) {
      F v = acc[c];
      if (scale) v *= load(scale + c0 + c * W);
      store(y + c0 + c * W, v + load(b2 + c0 + c * W));
    }
  }
  for (; c0 + W <= o; c0 += W) {
    F acc = {};
    for (int64_t u = 0; u < n_units; ++u) {
      const int64_t j = units[u];
      acc += hidden[j] * widen(q2 + j * o + c0);
    }
    if (scale) acc *= load(scale + c0);
    store(y + c0, acc + load(b2 + c0));
  }
  for (; c0 < o; ++c0) {
    float sum = 0.0f;
    for (int64_t u = 0; u < n_units; ++u) {
      const int64_t j = units[u];
      sum += hidden[j] * widen_one(q2[j * o + c0]);
    }
    y[c0] = (scale ? sum * scale[c0] : sum) + b2[c0];
  }
}

template <typename Q>
void run_compact(const at::Tensor& x, const at::Tensor& node_w, const at::Tensor& node_b,
                 const Q* q1, const float* s1, const at::Tensor& b1s, const Q* q2,
                 const float* s2, const at::Tensor& b2s, int64_t depth, int64_t l, int64_t o,
                 int64_t activation, float param, at::Tensor& y) {
  const int64_t batch = x.size(0), d = x.size(1);
  const float* xp = x.data_ptr<float>();
  const float* nw = node_w.data_ptr<float>();
  const float* nb = node_b.data_ptr<float>();
  const float* b1 = b1s.data_ptr<float>();
  const float* b2 = b2s.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t grain = rows_per_task(d * (depth + l) + l * o + 1);
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    constexpr int64_t R = kLockstepRows;
    std::vector<float> hidden(l);
    std::vector<int64_t> units(l);
    for (int64_t b0 = begin; b0 < end; b0 += R) {
      const int64_t rows = std::min(R, end - b0);
      int64_t leaves[R];
      if (rows == R) {
        const float* xs[R];
        for (int64_t r = 0; r < R; ++r) xs[r] = xp + (b0 + r) * d;
        walk_rows<float, R>(xs, nw, nb, depth, d, leaves);
      } else {
        for (int64_t r = 0; r < rows; ++r) leaves[r] = walk(xp + (b0 + r) * d, nw, nb, depth, d);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t leaf = leaves[r];
        compact_hidden(xp + (b0 + r) * d, q1 + leaf * l * d, s1 ? s1 + leaf * l : nullptr,
                       b1 + leaf * l, d, l, hidden.data());
        int64_t n_units = 0;
        for (int64_t j = 0; j < l; ++j) {
          hidden[j] = activate(hidden[j], activation, param);
          if (hidden[j] != 0.0f) units[n_units++] = j;  // NaN is kept, as any non-zero
        }
        compact_output(hidden.data(), units.data(), n_units, q2 + leaf * l * o,
                       s2 ? s2 + leaf * o : nullptr, b2 + leaf * o, o, yp + (b0 + r) * o);
      }
    }
  });
}

void check_scale(const c10::optional<at::Tensor>& scale, bool int8, int64_t rows, int64_t cols,
                 const char* name) {
  if (!int8) {
    TORCH_CHECK(!scale.has_value(), "fff_hard_forward_compact: ", name,
                " must be None for bfloat16 weights");
    return;
  }
  TORCH_CHECK(scale.has_value() && scale->scalar_type() == at::kFloat && scale->is_contiguous() &&
                  scale->numel() == rows * cols,
              "fff_hard_forward_compact: ", name, " must be contiguous float32 (", rows, ", ",
              cols, ") for int8 weights");
}

at::Tensor fff_hard_forward_compact(const at::Tensor& x, const at::Tensor& node_w,
                                    const at::Tensor& node_b, const at::Tensor& w1,
                                    const c10::optional<at::Tensor>& w1_scale,
                                    const at::Tensor& b1s, const at::Tensor& w2,
                                    const c10::optional<at::Tensor>& w2_scale,
                                    const at::Tensor& b2s, int64_t depth, int64_t activation,
                                    double activation_param) {
  check_inputs(x, node_w, node_b, depth);
  TORCH_CHECK(x.scalar_type() == at::kFloat, "fff_hard_forward_compact: x must be float32");
  const int64_t d = x.size(1);
  const int64_t n_leaves = int64_t(1) << depth;
  TORCH_CHECK(w1.dim() == 3 && w1.is_contiguous() && w1.size(0) == n_leaves && w1.size(2) == d,
              "fff_hard_forward_compact: w1 must be contiguous (2**depth, l, D)");
  const int64_t l = w1.size(1);
  TORCH_CHECK(w2.dim() == 3 && w2.is_contiguous() && w2.size(0) == n_leaves && w2.size(1) == l,
              "fff_hard_forward_compact: w2 must be contiguous (2**depth, l, O)");
  const int64_t o = w2.size(2);
  const auto kind = w1.scalar_type();
  TORCH_CHECK((kind == at::kBFloat16 || kind == at::kChar) && w2.scalar_type() == kind,
              "fff_hard_forward_compact: w1 and w2 must both be bfloat16 or both int8");
  const bool int8 = kind == at::kChar;
  check_scale(w1_scale, int8, n_leaves, l, "w1_scale");
  check_scale(w2_scale, int8, n_leaves, o, "w2_scale");
  TORCH_CHECK(b1s.is_contiguous() && b1s.scalar_type() == at::kFloat &&
                  b1s.numel() == n_leaves * l,
              "fff_hard_forward_compact: b1s must be contiguous float32 (2**depth, l)");
  TORCH_CHECK(b2s.is_contiguous() && b2s.scalar_type() == at::kFloat &&
                  b2s.numel() == n_leaves * o,
              "fff_hard_forward_compact: b2s must be contiguous float32 (2**depth, O)");
  TORCH_CHECK(activation >= kIdentity && activation <= kSigmoid,
              "fff_hard_forward_compact: unknown activation code");

  auto y = at::empty({x.size(0), o}, x.options());
  const float param = static_cast<float>(activation_param);
  if (int8) {
    run_compact(x, node_w, node_b, w1.data_ptr<int8_t>(), w1_scale->data_ptr<float>(), b1s,
                w2.data_ptr<int8_t>(), w2_scale->data_ptr<float>(), b2s, depth, l, o, activation,
                param, y);
  } else {
    const auto* q1 = reinterpret_cast<const uint16_t*>(w1.data_ptr<at::BFloat16>());
    const auto* q2 = reinterpret_cast<const uint16_t*>(w2.data_ptr<at::BFloat16>());
    run_compact(x, node_w, node_b, q1, nullptr, b1s, q2, nullptr, b2s, depth, l, o, activation,
                param, y);
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastff, m) {
  m.def(
      "fff_hard_forward_compact(Tensor x, Tensor node_weights, Tensor node_biases, Tensor w1, "
      "Tensor? w1_scale, Tensor b1s, Tensor w2, Tensor? w2_scale, Tensor b2s, int depth, "
      "int activation, float activation_param) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastff, CPU, m) { m.impl("fff_hard_forward_compact", &fff_hard_forward_compact); }
