// Shared by the CPU hard-forward kernels (fff_hard_cpu.cpp: float32/float64 leaves;
// fff_hard_compact_cpu.cpp: bfloat16/int8 leaves): activation codes, portable SIMD helpers, and
// the tree walk (routing), so both kernels route every row exactly alike.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastff_hard {
// Activation codes; fastff/layers/kernels/cpu_fused.py maps torch modules to these.
enum Activation : int64_t {
  kIdentity = 0,
  kRelu = 1,
  kLeakyRelu = 2,
  kGelu = 3,
  kGeluTanh = 4,
  kSilu = 5,
  kTanh = 6,
  kSigmoid = 7,
};

template <typename T>
inline T activate(T v, int64_t activation, T param) {
  switch (activation) {
    case kRelu:
      return v < T(0) ? T(0) : v;  // NaN passes through, as torch.relu
    case kLeakyRelu:
      return v < T(0) ? v * param : v;
    case kGelu:
      return T(0.5) * v * (T(1) + std::erf(v * T(M_SQRT1_2)));
    case kGeluTanh: {
      const T k = T(0.7978845608028654);  // sqrt(2 / pi)
      return T(0.5) * v * (T(1) + std::tanh(k * (v + T(0.044715) * v * v * v)));
    }
    case kSilu:
      return v / (T(1) + std::exp(-v));
    case kTanh:
      return std::tanh(v);
    case kSigmoid:
      return T(1) / (T(1) + std::exp(-v));
    default:
      return v;
  }
}

// Multiply-adds of one parallel task (rows per task = this / the work of one row): enough work to
// pay for at::parallel_for's scheduling.
constexpr int64_t kGrainMultiplyAdds = 65536;

// Rows that walk the tree together (walk_rows): independent dot products hide each other's latency.
constexpr int64_t kLockstepRows = 4;

// Rows per parallel task for rows of per_row multiply-adds each (at least one).
inline int64_t rows_per_task(int64_t per_row) {
  return std::max<int64_t>(1, kGrainMultiplyAdds / per_row);
}

// Portable SIMD through GCC/Clang vector extensions: the compiler emits AVX-512, AVX2 or SSE
// instructions for the flags it was given, and plain C++ semantics hold everywhere.
#if defined(__AVX512F__)
#define FASTFF_VECTOR_BYTES 64
#else
#define FASTFF_VECTOR_BYTES 32
#endif

// Simd<T>::vec: one full vector of T; Simd<T, Bytes>::vec: Bytes of T (e.g. the narrower
// bfloat16 / int8 vectors that widen to one full float32 vector).
template <typename T, int64_t Bytes = FASTFF_VECTOR_BYTES>
struct Simd {
  typedef T vec __attribute__((vector_size(Bytes)));
  static constexpr int64_t width = Bytes / sizeof(T);
};

template <typename T>
inline typename Simd<T>::vec load(const T* p) {
  typename Simd<T>::vec v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}

template <typename T>
inline void store(T* p, typename Simd<T>::vec v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
inline T sum_lanes(typename Simd<T>::vec v) {
  T lanes[Simd<T>::width];
  std::memcpy(lanes, &v, sizeof(v));
  T sum = T(0);
  for (int64_t k = 0; k < Simd<T>::width; ++k) sum += lanes[k];
  return sum;
}

// Dot product of length n: four vector accumulators, so the loop is bound by loads, not by the
// latency of one accumulator.
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  using V = typename Simd<T>::vec;
  constexpr int64_t W = Simd<T>::width;
  V s0 = {}, s1 = {}, s2 = {}, s3 = {};
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    s0 += load(a + i) * load(b + i);
    s1 += load(a + i + W) * load(b + i + W);
    s2 += load(a + i + 2 * W) * load(b + i + 2 * W);
    s3 += load(a + i + 3 * W) * load(b + i + 3 * W);
  }
  for (; i + W <= n; i += W) s0 += load(a + i) * load(b + i);
  T sum = sum_lanes<T>((s0 + s1) + (s2 + s3));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Leaf position (0 .. 2**depth - 1) reached by row x.
template <typename T>
inline int64_t walk(const T* x, const T* node_w, const T* node_b, int64_t depth, int64_t d) {
  int64_t node = 0;
  for (int64_t level = 0; level < depth; ++level) {
    const T logit = dot(x, node_w + node * d, d) + node_b[node];
    node = 2 * node + (logit >= T(0) ? 2 : 1);
  }
  return node - ((int64_t(1) << depth) - 1);
}

// R rows walk the tree in lockstep: R independent dot products per level hide each other's
// latency (reduction, compare, next node's address). Writes each row's leaf position.
template <typename T, int64_t R>
inline void walk_rows(const T* const* xs, const T* node_w, const T* node_b, int64_t depth,
                      int64_t d, int64_t* leaves) {
  using V = typename Simd<T>::vec;
  constexpr int64_t W = Simd<T>::width;
  int64_t node[R] = {};
  for (int64_t level = 0; level < depth; ++level) {
    const T* w[R];
    for (int64_t r = 0; r < R; ++r) w[r] = node_w + node[r] * d;
    V s0[R] = {}, s1[R] = {};
    int64_t i = 0;
    for (; i + 2 * W <= d; i += 2 * W) {
      for (int64_t r = 0; r < R; ++r) {
        s0[r] += load(xs[r] + i) * load(w[r] + i);
        s1[r] += load(xs[r] + i + W) * load(w[r] + i + W);
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      T sum = sum_lanes<T>(s0[r] + s1[r]);
      for (int64_t k = i; k < d; ++k) sum += xs[r][k] * w[r][k];
      const T logit = sum + node_b[node[r]];
      node[r] = 2 * node[r] + (logit >= T(0) ? 2 : 1);
    }
  }
  for (int64_t r = 0; r < R; ++r) leaves[r] = node[r] - ((int64_t(1) << depth) - 1);
}

// x, node weights and biases of one call of either kernel (messages name fff_hard_forward).
inline void check_inputs(const at::Tensor& x, const at::Tensor& node_w, const at::Tensor& node_b,
                  int64_t depth) {
  TORCH_CHECK(x.device().is_cpu(), "fff_hard_forward: x must be on the CPU");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "fff_hard_forward: x must be contiguous (B, D)");
  TORCH_CHECK(depth >= 0 && depth < 62, "fff_hard_forward: depth must be in [0, 62)");
  const int64_t n_nodes = (int64_t(1) << depth) - 1;
  TORCH_CHECK(node_w.is_contiguous() && node_w.size(0) == n_nodes && node_w.size(1) == x.size(1),
              "fff_hard_forward: node_weights must be contiguous (2**depth - 1, D)");
  TORCH_CHECK(node_b.is_contiguous() && node_b.numel() == n_nodes,
              "fff_hard_forward: node_biases must be contiguous (2**depth - 1, 1)");
  TORCH_CHECK(node_w.scalar_type() == x.scalar_type() && node_b.scalar_type() == x.scalar_type(),
              "fff_hard_forward: all tensors must share x's dtype");
}

}  // namespace fastff_hard
