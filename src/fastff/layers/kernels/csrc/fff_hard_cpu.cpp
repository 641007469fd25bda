// Fused hard forward of a fast feedforward layer (FFF) on the CPU.
//
// One pass per input row while the row is in cache: walk the tree level by level (a dot product
// with the current node, go right when the logit is >= 0), then evaluate the one leaf reached,
// y = act(x @ w1s[leaf] + b1s[leaf]) @ w2s[leaf] + b2s[leaf]. Rows run in parallel with
// at::parallel_for; nothing is gathered or copied, so temporary memory is O(leaf width) per thread.
//
// Shapes: x (B, D), node_weights (N, D), node_biases (N, 1), w1s (L, D, l), b1s (L, l),
// w2s (L, l, O), b2s (L, O), with L = 2**depth and N = L - 1, float32 or float64, all contiguous
// except that w1s may also be neuron-major (a transposed view of a contiguous (L, l, D) tensor).
// Registered as torch.ops.fastff.fff_hard_forward(x, node_weights, node_biases, w1s, b1s, w2s,
// b2s, depth, activation, activation_param) -> (B, O). The activation codes, SIMD helpers and the
// tree walk live in fff_hard_cpu.h (shared with the compact-weight kernel).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fff_hard_cpu.h"

namespace {

using namespace fastff_hard;

// hidden = x @ w1 + b1 for a leaf width N that is a multiple of the vector width: C vectors per
// w1 row, U rows per step, so that at least eight accumulators are in flight.
template <typename T, int64_t N>
inline void leaf_hidden_wide(const T* x, const T* w1, const T* b1, int64_t d, T* hidden) {
  using V = typename Simd<T>::vec;
  constexpr int64_t W = Simd<T>::width;
  constexpr int64_t C = N / W;
  constexpr int64_t U = C >= 8 ? 1 : 8 / C;
  V acc[U][C] = {};
  int64_t i = 0;
  for (; i + U <= d; i += U) {
    for (int64_t u = 0; u < U; ++u) {
      const T xi = x[i + u];
      for (int64_t c = 0; c < C; ++c) acc[u][c] += xi * load(w1 + (i + u) * N + c * W);
    }
  }
  for (; i < d; ++i) {
    for (int64_t c = 0; c < C; ++c) acc[0][c] += x[i] * load(w1 + i * N + c * W);
  }
  for (int64_t c = 0; c < C; ++c) {
    V sum = load(b1 + c * W);
    for (int64_t u = 0; u < U; ++u) sum += acc[u][c];
    store(hidden + c * W, sum);
  }
}

// hidden = x @ w1 + b1 for a leaf width N < vector width (N divides it): one vector holds R = W / N
// consecutive w1 rows; a lane shuffle spreads x[i .. i + R) to match (lane k takes x[i + k / N]).
template <typename T, int64_t N>
inline void leaf_hidden_packed(const T* x, const T* w1, const T* b1, int64_t d, T* hidden) {
  using V = typename Simd<T>::vec;
  using Mask = typename Simd<std::conditional_t<sizeof(T) == 4, int32_t, int64_t>>::vec;
  constexpr int64_t W = Simd<T>::width;
  constexpr int64_t R = W / N;
  Mask masks[N];
  for (int64_t m = 0; m < N; ++m) {
    for (int64_t k = 0; k < W; ++k) masks[m][k] = m * R + k / N;
  }
  V acc[N] = {};
  int64_t i = 0;
  for (; i + W <= d; i += W) {
    const V xv = load(x + i);
    for (int64_t m = 0; m < N; ++m) {
      acc[m] += __builtin_shuffle(xv, masks[m]) * load(w1 + (i + m * R) * N);
    }
  }
  T sums[N];
  for (int64_t j = 0; j < N; ++j) sums[j] = b1[j];
  for (int64_t m = 0; m < N; ++m) {
    T lanes[W];
    std::memcpy(lanes, &acc[m], sizeof(lanes));
    for (int64_t k = 0; k < W; ++k) sums[k % N] += lanes[k];
  }
  for (; i < d; ++i) {
    for (int64_t j = 0; j < N; ++j) sums[j] += x[i] * w1[i * N + j];
  }
  for (int64_t j = 0; j < N; ++j) hidden[j] = sums[j];
}

// hidden = x @ w1 + b1 for any leaf width l (scalar-vectorisable blocks of 64 hidden units).
template <typename T>
inline void leaf_hidden_any(const T* x, const T* w1, const T* b1, int64_t d, int64_t l,
                            T* hidden) {
  constexpr int64_t J = 64;
  for (int64_t j0 = 0; j0 < l; j0 += J) {
    const int64_t width = std::min(J, l - j0);
    T acc[J];
    for (int64_t j = 0; j < width; ++j) acc[j] = b1[j0 + j];
    for (int64_t i = 0; i < d; ++i) {
      const T xi = x[i];
      const T* row = w1 + i * l + j0;
      for (int64_t j = 0; j < width; ++j) acc[j] += xi * row[j];
    }
    for (int64_t j = 0; j < width; ++j) hidden[j0 + j] = acc[j];
  }
}

template <typename T, int64_t N>
inline void leaf_hidden_fixed(const T* x, const T* w1, const T* b1, int64_t d, T* hidden) {
  constexpr int64_t W = Simd<T>::width;
  if constexpr (N == 1) {
    hidden[0] = dot(x, w1, d) + b1[0];
  } else if constexpr (N % W == 0) {
    leaf_hidden_wide<T, N>(x, w1, b1, d, hidden);
  } else if constexpr (W % N == 0) {
#if defined(__GNUC__) && !defined(__clang__)
    leaf_hidden_packed<T, N>(x, w1, b1, d, hidden);
#else
    leaf_hidden_any(x, w1, b1, d, N, hidden);
#endif
  } else {
    leaf_hidden_any(x, w1, b1, d, N, hidden);
  }
}

// hidden = x @ w1 + b1 with w1 stored neuron-major, (l, D) contiguous: four neurons at a time
// share each load of x, each with its own accumulator chain.
template <typename T>
inline void leaf_hidden_neuron_major(const T* x, const T* w1t, const T* b1, int64_t d, int64_t l,
                                     T* hidden) {
  using V = typename Simd<T>::vec;
  constexpr int64_t W = Simd<T>::width;
  int64_t k = 0;
  for (; k + 4 <= l; k += 4) {
    const T* w = w1t + k * d;
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    int64_t i = 0;
    for (; i + W <= d; i += W) {
      const V xv = load(x + i);
      a0 += xv * load(w + i);
      a1 += xv * load(w + d + i);
      a2 += xv * load(w + 2 * d + i);
      a3 += xv * load(w + 3 * d + i);
    }
    T s0 = sum_lanes<T>(a0), s1 = sum_lanes<T>(a1), s2 = sum_lanes<T>(a2), s3 = sum_lanes<T>(a3);
    for (; i < d; ++i) {
      s0 += x[i] * w[i];
      s1 += x[i] * w[d + i];
      s2 += x[i] * w[2 * d + i];
      s3 += x[i] * w[3 * d + i];
    }
    hidden[k] = s0 + b1[k];
    hidden[k + 1] = s1 + b1[k + 1];
    hidden[k + 2] = s2 + b1[k + 2];
    hidden[k + 3] = s3 + b1[k + 3];
  }
  for (; k < l; ++k) hidden[k] = dot(x, w1t + k * d, d) + b1[k];
}

template <typename T>
inline void leaf_hidden(const T* x, const T* w1, const T* b1, int64_t d, int64_t l, T* hidden) {
  switch (l) {
    case 1: return leaf_hidden_fixed<T, 1>(x, w1, b1, d, hidden);
    case 2: return leaf_hidden_fixed<T, 2>(x, w1, b1, d, hidden);
    case 4: return leaf_hidden_fixed<T, 4>(x, w1, b1, d, hidden);
    case 8: return leaf_hidden_fixed<T, 8>(x, w1, b1, d, hidden);
    case 16: return leaf_hidden_fixed<T, 16>(x, w1, b1, d, hidden);
    case 32: return leaf_hidden_fixed<T, 32>(x, w1, b1, d, hidden);
    case 64: return leaf_hidden_fixed<T, 64>(x, w1, b1, d, hidden);
    default: return leaf_hidden_any(x, w1, b1, d, l, hidden);
  }
}

// y = hidden @ w2 + b2: output columns in register blocks of four vectors, then a scalar tail.
template <typename T>
inline void leaf_output(const T* hidden, const T* w2, const T* b2, int64_t l, int64_t o, T* y) {
  using V = typename Simd<T>::vec;
  constexpr int64_t W = Simd<T>::width;
  int64_t c0 = 0;
  for (; c0 + 4 * W <= o; c0 += 4 * W) {
    V acc[4];
    for (int64_t c = 0; c < 4; ++c) acc[c] = load(b2 + c0 + c * W);
    for (int64_t j = 0; j < l; ++j) {
      const T hj = hidden[j];
      const T* row = w2 + j * o + c0;
      for (int64_t c = 0; c < 4; ++c) acc[c] += hj * load(row + c * W);
    }
    for (int64_t c = 0; c < 4; ++c) store(y + c0 + c * W, acc[c]);
  }
  for (; c0 < o; ++c0) {
    T sum = b2[c0];
    for (int64_t j = 0; j < l; ++j) sum += hidden[j] * w2[j * o + c0];
    y[c0] = sum;
  }
}

// Rows per parallel task: a row's tree walk and leaf take d * (depth + l) + l * o multiply-adds.
int64_t grain_size(int64_t d, int64_t depth, int64_t l, int64_t o) {
  return rows_per_task(d * (depth + l) + l * o + 1);
}

at::Tensor fff_hard_forward(const at::Tensor& x, const at::Tensor& node_w,
                            const at::Tensor& node_b, const at::Tensor& w1s,
                            const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s,
                            int64_t depth, int64_t activation, double activation_param) {
  check_inputs(x, node_w, node_b, depth);
  const int64_t batch = x.size(0), d = x.size(1);
  const int64_t n_leaves = int64_t(1) << depth;
  // w1s is (2**depth, D, l), stored either row-major or neuron-major (a transposed view of a
  // contiguous (2**depth, l, D) tensor, the layout fastff.layers.FFF keeps it in).
  TORCH_CHECK(w1s.dim() == 3 && w1s.size(0) == n_leaves && w1s.size(1) == d,
              "fff_hard_forward: w1s must have shape (2**depth, D, l)");
  const bool neuron_major = !w1s.is_contiguous() && w1s.transpose(1, 2).is_contiguous();
  TORCH_CHECK(w1s.is_contiguous() || neuron_major,
              "fff_hard_forward: w1s must be contiguous (2**depth, D, l) or a transposed view of "
              "a contiguous (2**depth, l, D) tensor");
  const int64_t l = w1s.size(2);
  TORCH_CHECK(b1s.is_contiguous() && b1s.numel() == n_leaves * l,
              "fff_hard_forward: b1s must be contiguous (2**depth, l)");
  TORCH_CHECK(w2s.dim() == 3 && w2s.is_contiguous() && w2s.size(0) == n_leaves &&
                  w2s.size(1) == l,
              "fff_hard_forward: w2s must be contiguous (2**depth, l, O)");
  const int64_t o = w2s.size(2);
  TORCH_CHECK(b2s.is_contiguous() && b2s.numel() == n_leaves * o,
              "fff_hard_forward: b2s must be contiguous (2**depth, O)");
  for (const auto* t : {&w1s, &b1s, &w2s, &b2s}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(),
                "fff_hard_forward: all tensors must share x's dtype");
  }
  TORCH_CHECK(activation >= kIdentity && activation <= kSigmoid,
              "fff_hard_forward: unknown activation code");

  auto y = at::empty({batch, o}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fff_hard_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* nw = node_w.data_ptr<scalar_t>();
    const scalar_t* nb = node_b.data_ptr<scalar_t>();
    const scalar_t* w1 = w1s.data_ptr<scalar_t>();
    const scalar_t* b1 = b1s.data_ptr<scalar_t>();
    const scalar_t* w2 = w2s.data_ptr<scalar_t>();
    const scalar_t* b2 = b2s.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t param = static_cast<scalar_t>(activation_param);
    at::parallel_for(0, batch, grain_size(d, depth, l, o), [&](int64_t begin, int64_t end) {
      constexpr int64_t R = kLockstepRows;
      std::vector<scalar_t> hidden(l);
      for (int64_t b0 = begin; b0 < end; b0 += R) {
        const int64_t rows = std::min(R, end - b0);
        int64_t leaves[R];
        if (rows == R) {
          const scalar_t* xs[R];
          for (int64_t r = 0; r < R; ++r) xs[r] = xp + (b0 + r) * d;
          walk_rows<scalar_t, R>(xs, nw, nb, depth, d, leaves);
        } else {
          for (int64_t r = 0; r < rows; ++r) leaves[r] = walk(xp + (b0 + r) * d, nw, nb, depth, d);
        }
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t leaf = leaves[r];
          const scalar_t* xr = xp + (b0 + r) * d;
          if (neuron_major) {
            leaf_hidden_neuron_major(xr, w1 + leaf * d * l, b1 + leaf * l, d, l, hidden.data());
          } else {
            leaf_hidden(xr, w1 + leaf * d * l, b1 + leaf * l, d, l, hidden.data());
          }
          for (int64_t j = 0; j < l; ++j) hidden[j] = activate(hidden[j], activation, param);
          leaf_output(hidden.data(), w2 + leaf * l * o, b2 + leaf * o, l, o, yp + (b0 + r) * o);
        }
      }
    });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY(fastff, m) {
  m.def(
      "fff_hard_forward(Tensor x, Tensor node_weights, Tensor node_biases, Tensor w1s, "
      "Tensor b1s, Tensor w2s, Tensor b2s, int depth, int activation, float activation_param) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(fastff, CPU, m) {
  m.impl("fff_hard_forward", &fff_hard_forward);
}
