// Fused hard forward of a fast feedforward layer (FFF) on the CPU.
//
// One pass per input row while the row is in cache: walk the tree level by level (a dot product
// with the current node, go right when the logit is >= 0), then evaluate the one leaf reached,
// y = act(x @ w1s[leaf] + b1s[leaf]) @ w2s[leaf] + b2s[leaf]. Rows run in parallel with
// at::parallel_for; nothing is gathered or copied, so temporary memory is O(leaf width) per thread.
//
// Shapes: x (B, D), node_weights (N, D), node_biases (N, 1), w1s (L, D, l), b1s (L, l),
// w2s (L, l, O), b2s (L, O), with L = 2**depth and N = L - 1, all contiguous, float32 or float64.
// Registered as torch.ops.fastff.fff_hard_forward(x, node_weights, node_biases, w1s, b1s, w2s,
// b2s, depth, activation, activation_param) -> (B, O), and torch.ops.fastff.fff_route(x,
// node_weights, node_biases, depth) -> (B,) int64 leaf indices.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// Activation codes; fastff/layers/fff_fast.py maps torch modules to these.
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

// Dot product of length n with 32 independent partial sums, so that the loop vectorises and
// is not bound by the latency of one accumulator.
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  constexpr int64_t K = 32;
  T acc[K] = {};
  int64_t i = 0;
  for (; i + K <= n; i += K) {
#pragma omp simd
    for (int64_t k = 0; k < K; ++k) acc[k] += a[i + k] * b[i + k];
  }
  T tail = T(0);
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int64_t k = 0; k < K; k += 2) tail += acc[k] + acc[k + 1];
  return tail;
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

// hidden = x @ w1 + b1 for a leaf width N known at compile time: U input rows at once, each with
// its own N partial sums, so at least 32 independent accumulators stay in registers.
template <typename T, int64_t N>
inline void leaf_hidden_fixed(const T* x, const T* w1, const T* b1, int64_t d, T* hidden) {
  if constexpr (N == 1) {
    hidden[0] = dot(x, w1, d) + b1[0];
  } else {
    constexpr int64_t U = N >= 32 ? 1 : 32 / N;
    T acc[U][N] = {};
    int64_t i = 0;
    for (; i + U <= d; i += U) {
      const T* rows = w1 + i * N;
      for (int64_t u = 0; u < U; ++u) {
        const T xi = x[i + u];
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) acc[u][j] += xi * rows[u * N + j];
      }
    }
    for (; i < d; ++i) {
      const T xi = x[i];
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) acc[0][j] += xi * w1[i * N + j];
    }
    for (int64_t j = 0; j < N; ++j) {
      T sum = b1[j];
      for (int64_t u = 0; u < U; ++u) sum += acc[u][j];
      hidden[j] = sum;
    }
  }
}

// hidden = x @ w1 + b1 for any leaf width l (blocks of 64 hidden units).
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
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) acc[j] += xi * row[j];
    }
    for (int64_t j = 0; j < width; ++j) hidden[j0 + j] = acc[j];
  }
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

// y = hidden @ w2 + b2, output columns in register blocks of 32.
template <typename T>
inline void leaf_output(const T* hidden, const T* w2, const T* b2, int64_t l, int64_t o, T* y) {
  constexpr int64_t J = 32;
  int64_t c0 = 0;
  for (; c0 + J <= o; c0 += J) {
    T acc[J];
    for (int64_t c = 0; c < J; ++c) acc[c] = b2[c0 + c];
    for (int64_t j = 0; j < l; ++j) {
      const T hj = hidden[j];
      const T* row = w2 + j * o + c0;
#pragma omp simd
      for (int64_t c = 0; c < J; ++c) acc[c] += hj * row[c];
    }
    for (int64_t c = 0; c < J; ++c) y[c0 + c] = acc[c];
  }
  if (c0 < o) {
    const int64_t width = o - c0;
    T acc[J];
    for (int64_t c = 0; c < width; ++c) acc[c] = b2[c0 + c];
    for (int64_t j = 0; j < l; ++j) {
      const T hj = hidden[j];
      const T* row = w2 + j * o + c0;
      for (int64_t c = 0; c < width; ++c) acc[c] += hj * row[c];
    }
    for (int64_t c = 0; c < width; ++c) y[c0 + c] = acc[c];
  }
}

// Rows per parallel task: enough work (about 64k multiply-adds) to pay for the scheduling.
int64_t grain_size(int64_t d, int64_t depth, int64_t l, int64_t o) {
  const int64_t per_row = d * (depth + l) + l * o + 1;
  return std::max<int64_t>(1, 65536 / per_row);
}

void check_inputs(const at::Tensor& x, const at::Tensor& node_w, const at::Tensor& node_b,
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

at::Tensor fff_route(const at::Tensor& x, const at::Tensor& node_w, const at::Tensor& node_b,
                     int64_t depth) {
  check_inputs(x, node_w, node_b, depth);
  const int64_t batch = x.size(0), d = x.size(1);
  auto leaves = at::empty({batch}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fff_route", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* nw = node_w.data_ptr<scalar_t>();
    const scalar_t* nb = node_b.data_ptr<scalar_t>();
    int64_t* out = leaves.data_ptr<int64_t>();
    at::parallel_for(0, batch, std::max<int64_t>(1, 65536 / (d * depth + 1)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t b = begin; b < end; ++b) {
                         out[b] = walk(xp + b * d, nw, nb, depth, d);
                       }
                     });
  });
  return leaves;
}

at::Tensor fff_hard_forward(const at::Tensor& x, const at::Tensor& node_w,
                            const at::Tensor& node_b, const at::Tensor& w1s,
                            const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s,
                            int64_t depth, int64_t activation, double activation_param) {
  check_inputs(x, node_w, node_b, depth);
  const int64_t batch = x.size(0), d = x.size(1);
  const int64_t n_leaves = int64_t(1) << depth;
  TORCH_CHECK(w1s.dim() == 3 && w1s.is_contiguous() && w1s.size(0) == n_leaves &&
                  w1s.size(1) == d,
              "fff_hard_forward: w1s must be contiguous (2**depth, D, l)");
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
      std::vector<scalar_t> hidden(l);
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* row = xp + b * d;
        const int64_t leaf = walk(row, nw, nb, depth, d);
        leaf_hidden(row, w1 + leaf * d * l, b1 + leaf * l, d, l, hidden.data());
        for (int64_t j = 0; j < l; ++j) hidden[j] = activate(hidden[j], activation, param);
        leaf_output(hidden.data(), w2 + leaf * l * o, b2 + leaf * o, l, o, yp + b * o);
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
  m.def("fff_route(Tensor x, Tensor node_weights, Tensor node_biases, int depth) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastff, CPU, m) {
  m.impl("fff_hard_forward", &fff_hard_forward);
  m.impl("fff_route", &fff_route);
}
