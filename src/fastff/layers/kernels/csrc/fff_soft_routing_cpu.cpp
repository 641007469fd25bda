// Routing of the FFF soft (training) forward on the CPU: leaf mixture and node entropy, forward
// and backward, one pass over each row.
//
// The torch-op path of fastff/layers/fff_soft_fused.py makes a dozen elementwise passes over
// (B, N) and (B, L) tensors per step; here each row is done while it is in cache, with the
// transcendental functions vectorised (ATen's Vectorized, Sleef on AVX2/AVX-512). Same math:
//
// - mixture m (B, L): the product along each leaf's path of c' = sigmoid(z') (went right) or
//   1 - c' = sigmoid(-z') (went left), both from e = exp(-|z|) (exactly 0 or 1 where e
//   underflows), built level by level; z' = -z where the region-leak swap is set, else z (the
//   torch ops take the exp of a sum of log-sigmoids: the same values to rounding);
// - entropy H(z) of the logit clamped to [-bound, bound]: softplus(zc) - zc sigmoid(zc), which
//   is log1p(e) + a e / (1 + e) with a = |zc|, e = exp(-a); the kernel returns its batch mean;
// - backward: with q = dLoss/dm * m, L_n and R_n the sums of q below node n's left and right
//   child, dLoss/dz'_n = R_n - (L_n + R_n) c'_n (negated where swapped), minus
//   dLoss/dH_n / B * z c (1 - c) strictly inside the clamp (dH/dz = -z c (1 - c) there).
//
// Shapes: logits (B, N) with N = 2**depth - 1, float32 or float64, contiguous; swap (B, N) bool
// or None; mixture and leaf_grad (B, L) with L = 2**depth (without the mixture the backward reads
// leaf_grad as the leaf terms q = dLoss/dm * m); grad_entropy (N,) or None. Registered
// as torch.ops.fastff.fff_soft_routing_forward(logits, swap, depth) -> (mixture, entropy_mean)
// and torch.ops.fastff.fff_soft_routing_backward(logits, swap, leaf_grad, mixture, grad_entropy,
// depth) -> grad_logits (B, N). Also leaf_forward_mixed and leaf_backward_mixed, the elementwise
// leaf passes of the whole ReLU step in fff_soft_train_cpu.cpp (declared in fff_soft_cpu.h).

// ATen's vector types for the ISA this file is compiled for (cpu_build passes the -m flags);
// the CPU_CAPABILITY namespace keeps them apart from the ones inside libtorch.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__FMA__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#else
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "fff_soft_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

// Rows per block: the unit of parallel work and of the entropy's partial sums. Elementwise work
// runs flat over a block's (rows, N) or (rows, L) values, so small trees still fill the vector
// lanes; the tree sums run per row. Depends only on N (the result does not depend on threads).
constexpr int64_t kMaxBlockRows = 64;
constexpr int64_t kRoutingBlockValues = 8192;  // (rows, N) values of one routing block, at most
constexpr int64_t kLeafBlockValues = 16384;    // (rows, H) values of one leaf-pass block, at most

int64_t block_rows(int64_t values_per_row, int64_t block_values) {
  return std::max<int64_t>(1, std::min<int64_t>(kMaxBlockRows, block_values / values_per_row));
}

template <typename T>
using Vec = at::vec::Vectorized<T>;

// Node probabilities are clamped to [eps, 1 - eps] before the entropy, as in the torch ops
// (fastff.layers.fff_soft.ENTROPY_EPSILON): the logit is clamped to [-bound, bound].
constexpr double kEntropyEpsilon = 1e-6;
inline double entropy_logit_bound() {
  return std::log((1.0 - kEntropyEpsilon) / kEntropyEpsilon);
}

// Each of the leaves' mixture weights m[0, L) repeated leaf_width times, into out[0, L * l): by
// rounds of interleaving with itself (l a power of two and L * l a multiple of 2 * Vec::size())
// or else one fill per leaf.
template <typename T>
void spread_weights(const T* m, int64_t leaves, int64_t leaf_width, T* out) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t width = leaves * leaf_width;
  const bool rounds = (leaf_width & (leaf_width - 1)) == 0 && leaves % W == 0;
  if (!rounds) {
    for (int64_t j = 0; j < leaves; ++j) std::fill(out + j * leaf_width, out + (j + 1) * leaf_width, m[j]);
    return;
  }
  std::copy(m, m + leaves, out + width - leaves);  // built in place from the back
  for (int64_t n = leaves; n < width; n *= 2) {
    T* source = out + width - n;
    T* target = out + width - 2 * n;
    for (int64_t i = 0; i < n; i += W) {  // target may overlap source only behind the reads
      const Vec<T> v = Vec<T>::loadu(source + i);
      const auto pair = at::vec::interleave2(v, v);
      pair.first.store(target + 2 * i);
      pair.second.store(target + 2 * i + W);
    }
  }
}

// Sums of each leaf's leaf_width consecutive values of row[0, L * l) into row[0, L), in place: by
// rounds of pairwise sums of deinterleaved vectors (l a power of two and L a multiple of
// Vec::size()) or else one loop per leaf.
template <typename T>
void sum_per_leaf(T* row, int64_t leaves, int64_t leaf_width) {
  constexpr int64_t W = Vec<T>::size();
  if ((leaf_width & (leaf_width - 1)) != 0 || leaves % W != 0) {
    for (int64_t j = 0; j < leaves; ++j) {
      T total = T(0);
      for (int64_t k = 0; k < leaf_width; ++k) total += row[j * leaf_width + k];
      row[j] = total;
    }
    return;
  }
  for (int64_t n = leaves * leaf_width; n > leaves; n /= 2) {
    for (int64_t i = 0; i < n; i += 2 * W) {  // writes at i / 2 <= i: behind the reads
      const auto pair = at::vec::deinterleave2(Vec<T>::loadu(row + i), Vec<T>::loadu(row + i + W));
      (pair.first + pair.second).store(row + i / 2);
    }
  }
}

// Per-element signs (-1 where swapped) of count <= Vec::size() values starting at swap.
template <typename T>
inline Vec<T> swap_signs(const bool* swap, int64_t count) {
  alignas(64) T signs[Vec<T>::size()];
  for (int64_t i = 0; i < Vec<T>::size(); ++i) {
    signs[i] = (i < count && swap[i]) ? T(-1) : T(1);
  }
  return Vec<T>::loadu(signs);
}

void check_logits(const at::Tensor& logits, int64_t depth) {
  TORCH_CHECK(logits.device().is_cpu(), "fff_soft_routing: logits must be on the CPU");
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
              "fff_soft_routing: logits must be float32 or float64");
  TORCH_CHECK(depth >= 1 && depth <= 30, "fff_soft_routing: depth must be in [1, 30]");
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) == (int64_t(1) << depth) - 1,
              "fff_soft_routing: logits must be (B, 2**depth - 1)");
  TORCH_CHECK(logits.is_contiguous(), "fff_soft_routing: logits must be contiguous");
}

const bool* swap_data(const c10::optional<at::Tensor>& swap, const at::Tensor& logits) {
  if (!swap.has_value() || !swap->defined()) return nullptr;
  TORCH_CHECK(swap->scalar_type() == at::kBool && swap->sizes() == logits.sizes() &&
                  swap->is_contiguous() && swap->device().is_cpu(),
              "fff_soft_routing: swap must be a contiguous CPU bool tensor shaped like logits");
  return swap->data_ptr<bool>();
}

}  // namespace

namespace fastff_soft {

std::tuple<at::Tensor, at::Tensor> fff_soft_routing_forward(
    const at::Tensor& logits, const c10::optional<at::Tensor>& swap, int64_t depth) {
  check_logits(logits, depth);
  const bool* sw = swap_data(swap, logits);
  const int64_t batch = logits.size(0), nodes = logits.size(1), leaves = nodes + 1;
  at::Tensor mixture = at::empty({batch, leaves}, logits.options());
  at::Tensor entropy_mean = at::empty({nodes}, logits.options());
  const int64_t rows_per_block = block_rows(nodes, kRoutingBlockValues);
  const int64_t blocks = (batch + rows_per_block - 1) / rows_per_block;
  std::vector<double> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1) * nodes), 0.0);

  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "fff_soft_routing_forward", [&] {
    using T = scalar_t;
    constexpr int64_t W = Vec<T>::size();
    const T* zp = logits.data_ptr<T>();
    T* mp = mixture.data_ptr<T>();
    // The entropy's clamp: |z| > bound uses the entropy at the bound.
    const double bound_d = entropy_logit_bound();
    const double e_bound = std::exp(-bound_d);
    const Vec<T> vbound(static_cast<T>(bound_d));
    const Vec<T> ventropy_bound(
        static_cast<T>(std::log1p(e_bound) + bound_d * e_bound / (1.0 + e_bound)));
    const Vec<T> zero(T(0)), one(T(1));
    at::parallel_for(0, blocks, 1, [&](int64_t block_begin, int64_t block_end) {
      const size_t buffer = static_cast<size_t>(rows_per_block * nodes);
      std::vector<T> go_left(buffer), go_right(buffer), entropy(buffer);
      for (int64_t block = block_begin; block < block_end; ++block) {
        const int64_t row0 = block * rows_per_block;
        const int64_t rows = std::min(batch, row0 + rows_per_block) - row0;
        const T* z = zp + row0 * nodes;
        const bool* s = sw == nullptr ? nullptr : sw + row0 * nodes;
        // elementwise over the block's nodes: c', 1 - c' and the clamped entropy
        const int64_t span = rows * nodes;  // the block's values
        for (int64_t i = 0; i < span; i += W) {
          const int64_t count = std::min(W, span - i);
          const Vec<T> zv = Vec<T>::loadu(z + i, count);
          const Vec<T> zm = s == nullptr ? zv : zv * swap_signs<T>(s + i, count);
          const Vec<T> a = zv.abs();
          const Vec<T> e = a.neg().exp();  // exp(-|z|): 0 where a decision is exactly 0 or 1
          const Vec<T> u = one + e;
          const Vec<T> inv = one / u;       // sigmoid(|z|)
          const Vec<T> small = e * inv;     // sigmoid(-|z|)
          const Vec<T> right = zm >= zero;  // mask: c' = sigmoid(z') >= 1/2
          Vec<T>::blendv(small, inv, right).store(go_right.data() + i, count);
          Vec<T>::blendv(inv, small, right).store(go_left.data() + i, count);
          // log1p(e) = log(u) + (e - (u - 1)) / u: the rounding of u corrected to first order
          const Vec<T> lp = u.log() + (e - (u - one)) * inv;
          const Vec<T> inside = a <= vbound;  // mask: the clamp is inactive
          Vec<T>::blendv(ventropy_bound, lp + a * small, inside).store(entropy.data() + i, count);
        }
        // the block's entropy sums per node (at most 64 rows, in T), then kept in double
        T* column = entropy.data();  // row 0 accumulates the others
        for (int64_t r = 1; r < rows; ++r) {
          const T* h = entropy.data() + r * nodes;
          for (int64_t n = 0; n < nodes; n += W) {
            const int64_t count = std::min(W, nodes - n);
            (Vec<T>::loadu(column + n, count) + Vec<T>::loadu(h + n, count))
                .store(column + n, count);
          }
        }
        double* sums = partial.data() + block * nodes;
        for (int64_t n = 0; n < nodes; ++n) sums[n] = static_cast<double>(column[n]);
        // mixture, level by level, in place in each output row (children after parents)
        for (int64_t r = 0; r < rows; ++r) {
          const T* left = go_left.data() + r * nodes;
          const T* right = go_right.data() + r * nodes;
          T* m = mp + (row0 + r) * leaves;
          m[0] = left[0];
          m[1] = right[0];
          for (int64_t level = 1; level < depth; ++level) {
            const int64_t base = (int64_t(1) << level) - 1;  // also the last parent's index
            if (base + 1 >= W) {  // whole vectors of parents, last first
              for (int64_t i = base + 1 - W; i >= 0; i -= W) {
                const Vec<T> parent = Vec<T>::loadu(m + i);
                const auto children = at::vec::interleave2(
                    parent * Vec<T>::loadu(left + base + i),
                    parent * Vec<T>::loadu(right + base + i));
                children.first.store(m + 2 * i);
                children.second.store(m + 2 * i + W);
              }
            } else {
              for (int64_t i = base; i >= 0; --i) {
                const T parent = m[i];
                m[2 * i + 1] = parent * right[base + i];
                m[2 * i] = parent * left[base + i];
              }
            }
          }
        }
      }
    });
    T* hp = entropy_mean.data_ptr<T>();
    for (int64_t n = 0; n < nodes; ++n) {
      double total = 0.0;
      for (int64_t block = 0; block < blocks; ++block) total += partial[block * nodes + n];
      hp[n] = static_cast<T>(total / static_cast<double>(batch));
    }
  });
  return {mixture, entropy_mean};
}

at::Tensor fff_soft_routing_backward(const at::Tensor& logits,
                                     const c10::optional<at::Tensor>& swap,
                                     const c10::optional<at::Tensor>& leaf_grad,
                                     const c10::optional<at::Tensor>& mixture,
                                     const c10::optional<at::Tensor>& grad_entropy,
                                     int64_t depth) {
  check_logits(logits, depth);
  const bool* sw = swap_data(swap, logits);
  const int64_t batch = logits.size(0), nodes = logits.size(1), leaves = nodes + 1;
  const bool has_leaf = leaf_grad.has_value() && leaf_grad->defined();
  const bool has_entropy = grad_entropy.has_value() && grad_entropy->defined();
  // without the mixture, leaf_grad holds the leaf terms q = dLoss/dm * m themselves
  const bool has_mixture = has_leaf && mixture.has_value() && mixture->defined();
  if (has_leaf) {
    for (const at::Tensor* t : {&*leaf_grad, has_mixture ? &*mixture : &*leaf_grad}) {
      TORCH_CHECK(t->scalar_type() == logits.scalar_type() && t->is_contiguous() &&
                      t->dim() == 2 && t->size(0) == batch && t->size(1) == leaves,
                  "fff_soft_routing_backward: leaf_grad and mixture must be contiguous (B, L) "
                  "tensors in the logits' dtype");
    }
  }
  if (has_entropy) {
    TORCH_CHECK(grad_entropy->scalar_type() == logits.scalar_type() &&
                    grad_entropy->is_contiguous() && grad_entropy->numel() == nodes,
                "fff_soft_routing_backward: grad_entropy must be a contiguous (N,) tensor in "
                "the logits' dtype");
  }
  if (!has_leaf && !has_entropy) return at::zeros_like(logits);
  at::Tensor grad = at::empty_like(logits);
  const int64_t rows_per_block = block_rows(nodes, kRoutingBlockValues);
  const int64_t blocks = (batch + rows_per_block - 1) / rows_per_block;

  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "fff_soft_routing_backward", [&] {
    using T = scalar_t;
    constexpr int64_t W = Vec<T>::size();
    const T* zp = logits.data_ptr<T>();
    const T* gp = has_leaf ? leaf_grad->data_ptr<T>() : nullptr;
    const T* mp = has_mixture ? mixture->data_ptr<T>() : nullptr;
    T* out = grad.data_ptr<T>();
    const Vec<T> vbound(static_cast<T>(entropy_logit_bound())), zero(T(0)), one(T(1));
    // dLoss/dH_n / B (the entropy output is a batch mean), tiled over a block's rows
    std::vector<T> scale(has_entropy ? static_cast<size_t>(rows_per_block * nodes) : 0);
    if (has_entropy) {
      const T* ge = grad_entropy->data_ptr<T>();
      for (int64_t n = 0; n < nodes; ++n) scale[n] = ge[n] / static_cast<T>(batch);
      for (int64_t r = 1; r < rows_per_block; ++r) {
        std::copy(scale.begin(), scale.begin() + nodes, scale.begin() + r * nodes);
      }
    }
    at::parallel_for(0, blocks, 1, [&](int64_t block_begin, int64_t block_end) {
      const size_t buffer = static_cast<size_t>(rows_per_block * nodes);
      std::vector<T> decision(buffer), spread(buffer);
      std::vector<T> totals(has_leaf ? static_cast<size_t>(rows_per_block * leaves) : 0);
      for (int64_t block = block_begin; block < block_end; ++block) {
        const int64_t row0 = block * rows_per_block;
        const int64_t rows = std::min(batch, row0 + rows_per_block) - row0;
        const T* z = zp + row0 * nodes;
        const bool* s = sw == nullptr ? nullptr : sw + row0 * nodes;
        T* g = out + row0 * nodes;
        // c' = sigmoid(z') of the mixture and c (1 - c) = e / (1 + e)**2, e = exp(-|z|)
        const int64_t span = rows * nodes;  // the block's values
        for (int64_t i = 0; i < span; i += W) {
          const int64_t count = std::min(W, span - i);
          const Vec<T> zv = Vec<T>::loadu(z + i, count);
          const Vec<T> zm = s == nullptr ? zv : zv * swap_signs<T>(s + i, count);
          const Vec<T> e = zv.abs().neg().exp();
          const Vec<T> inv = one / (one + e);
          Vec<T>::blendv(e * inv, inv, zm >= zero).store(decision.data() + i, count);
          (e * inv * inv).store(spread.data() + i, count);
        }
        if (has_leaf) {
          const T* gl = gp + row0 * leaves;
          if (mp == nullptr) {
            std::copy(gl, gl + rows * leaves, totals.data());
          } else {
            const T* ml = mp + row0 * leaves;
            for (int64_t j = 0; j < rows * leaves; j += W) {  // q = dLoss/dm * m
              const int64_t count = std::min(W, rows * leaves - j);
              (Vec<T>::loadu(gl + j, count) * Vec<T>::loadu(ml + j, count))
                  .store(totals.data() + j, count);
            }
          }
          for (int64_t r = 0; r < rows; ++r) {
            T* t = totals.data() + r * leaves;
            const T* c = decision.data() + r * nodes;
            const bool* sr = s == nullptr ? nullptr : s + r * nodes;
            T* gr = g + r * nodes;
            // subtree sums, deepest level first; t[i] of a level overwrites after reading
            for (int64_t level = depth - 1; level >= 0; --level) {
              const int64_t base = (int64_t(1) << level) - 1;
              if (base + 1 >= W) {  // whole vectors of nodes, first first
                for (int64_t i = 0; i <= base; i += W) {
                  const auto pairs = at::vec::deinterleave2(Vec<T>::loadu(t + 2 * i),
                                                            Vec<T>::loadu(t + 2 * i + W));
                  const Vec<T> total = pairs.first + pairs.second;
                  Vec<T> dz = pairs.second - total * Vec<T>::loadu(c + base + i);
                  if (sr != nullptr) dz = dz * swap_signs<T>(sr + base + i, W);
                  dz.store(gr + base + i);
                  total.store(t + i);
                }
                continue;
              }
              for (int64_t i = 0; i <= base; ++i) {
                const T left = t[2 * i], right = t[2 * i + 1];
                const T total = left + right;
                const T dz = right - total * c[base + i];
                gr[base + i] = (sr != nullptr && sr[base + i]) ? -dz : dz;
                t[i] = total;
              }
            }
          }
        } else {
          std::fill(g, g + span, T(0));
        }
        if (has_entropy) {
          for (int64_t i = 0; i < span; i += W) {
            const int64_t count = std::min(W, span - i);
            const Vec<T> zv = Vec<T>::loadu(z + i, count);
            const Vec<T> term = zv * Vec<T>::loadu(scale.data() + i, count) *
                                Vec<T>::loadu(spread.data() + i, count);
            const Vec<T> inside = zv.abs() < vbound;  // strictly, as hardtanh_backward
            const Vec<T> gv = Vec<T>::loadu(g + i, count);
            Vec<T>::blendv(gv, gv - term, inside).store(g + i, count);
          }
        }
      }
    });
  });
  return grad;
}

// The whole step's leaf side of the forward (ReLU): from the pre-activations (B, H) (rows may be
// strided; left unchanged) and the mixture (B, L), returns mixed (B, H + L) = [relu(pre) * m of
// each unit's leaf | m], the left operand of the output product with [w2s; b2s]. The backward
// needs nothing else of the leaves: relu(pre) > 0 exactly where the weighted unit is > 0 or its
// leaf's weight is 0, where the unit's gradient is 0 anyway.
at::Tensor leaf_forward_mixed(const at::Tensor& pre, const at::Tensor& mix, int64_t leaf_width) {
  const int64_t batch = pre.size(0), width = pre.size(1), leaves = width / leaf_width;
  TORCH_CHECK(pre.dim() == 2 && pre.stride(1) == 1 && pre.stride(0) >= width &&
                  width % leaf_width == 0 && mix.is_contiguous() && mix.dim() == 2 &&
                  mix.size(0) == batch && mix.size(1) == leaves &&
                  mix.scalar_type() == pre.scalar_type(),
              "leaf_forward_mixed: pre (B, L * l) with contiguous rows, mix contiguous (B, L)");
  const int64_t pre_stride = pre.stride(0), out_width = width + leaves;
  at::Tensor mixed = at::empty({batch, out_width}, pre.options());
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "leaf_forward_mixed", [&] {
    using T = scalar_t;
    const T* hp = pre.data_ptr<T>();
    const T* mp = mix.data_ptr<T>();
    T* wp = mixed.data_ptr<T>();
    at::parallel_for(0, batch, std::max<int64_t>(1, 16384 / width), [&](int64_t begin, int64_t end) {
      std::vector<T> spread(leaf_width > 1 ? width : 0);
      for (int64_t row = begin; row < end; ++row) {
        const T* h = hp + row * pre_stride;
        const T* m = mp + row * leaves;
        T* w = wp + row * out_width;
        const T* mr = m;  // each unit's mixture weight
        if (leaf_width > 1) {
          spread_weights(m, leaves, leaf_width, spread.data());
          mr = spread.data();
        }
        const Vec<T> zero(T(0));
        for (int64_t i = 0; i < width; i += Vec<T>::size()) {
          const int64_t count = std::min<int64_t>(Vec<T>::size(), width - i);
          const Vec<T> hv = Vec<T>::loadu(h + i, count);
          const Vec<T> relu = Vec<T>::blendv(hv, zero, hv < zero);  // NaN passes, as torch.relu
          (relu * Vec<T>::loadu(mr + i, count)).store(w + i, count);
        }
        std::copy(m, m + leaves, w + width);
      }
    });
  });
  return mixed;
}

// The whole step's leaf side of the backward (ReLU), one pass over each row: from g =
// dLoss/d(weighted) (B, H) (rows may be strided; overwritten with dLoss/d(pre-activation)),
// mixed (B, H + L) of leaf_forward_mixed and dLoss/d(mixture) through the leaf output biases
// (B, L) (rows may be strided), returns the leaf terms q = dLoss/dm * m (B, L) for the routing
// backward and dLoss/db1 (H,), the column sums of dLoss/d(pre-activation) (summed per block of
// rows and then over blocks in order: the same for any thread count).
std::tuple<at::Tensor, at::Tensor> leaf_backward_mixed(at::Tensor grad_weighted,
                                                       const at::Tensor& mixed,
                                                       const at::Tensor& grad_bias_mix,
                                                       int64_t leaf_width) {
  const int64_t batch = grad_weighted.size(0), width = grad_weighted.size(1);
  const int64_t leaves = width / leaf_width, mixed_width = width + leaves;
  TORCH_CHECK(grad_weighted.stride(1) == 1 && grad_weighted.stride(0) >= width &&
                  mixed.is_contiguous() && mixed.size(0) == batch &&
                  mixed.size(1) == mixed_width && grad_bias_mix.stride(1) == 1 &&
                  grad_bias_mix.size(0) == batch && grad_bias_mix.size(1) == leaves &&
                  mixed.scalar_type() == grad_weighted.scalar_type() &&
                  grad_bias_mix.scalar_type() == grad_weighted.scalar_type(),
              "leaf_backward_mixed: grad_weighted (B, H), mixed (B, H + L), grad_bias_mix (B, L)");
  const int64_t g_stride = grad_weighted.stride(0), gb_stride = grad_bias_mix.stride(0);
  const int64_t rows_per_block = block_rows(width, kLeafBlockValues);
  const int64_t blocks = (batch + rows_per_block - 1) / rows_per_block;
  at::Tensor terms = at::empty({batch, leaves}, mixed.options());
  at::Tensor bias_grad = at::empty({width}, mixed.options());
  std::vector<double> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1) * width), 0.0);
  AT_DISPATCH_FLOATING_TYPES(mixed.scalar_type(), "leaf_backward_mixed", [&] {
    using T = scalar_t;
    T* gp = grad_weighted.data_ptr<T>();
    const T* wp = mixed.data_ptr<T>();
    const T* bp = grad_bias_mix.data_ptr<T>();
    T* qp = terms.data_ptr<T>();
    at::parallel_for(0, blocks, 1, [&](int64_t block_begin, int64_t block_end) {
      std::vector<T> spread(leaf_width > 1 ? width : 0), product(width), column(width);
      for (int64_t block = block_begin; block < block_end; ++block) {
        std::fill(column.begin(), column.end(), T(0));  // the block's column sums
        T* sums = column.data();
        const int64_t end = std::min(batch, (block + 1) * rows_per_block);
        for (int64_t row = block * rows_per_block; row < end; ++row) {
          T* g = gp + row * g_stride;
          const T* w = wp + row * mixed_width;
          const T* m = w + width;
          const T* gb = bp + row * gb_stride;
          const T* mr = m;
          if (leaf_width > 1) {
            spread_weights(m, leaves, leaf_width, spread.data());
            mr = spread.data();
          }
          T* pr = product.data();
          const Vec<T> zero(T(0));
          for (int64_t i = 0; i < width; i += Vec<T>::size()) {
            const int64_t count = std::min<int64_t>(Vec<T>::size(), width - i);
            const Vec<T> gv = Vec<T>::loadu(g + i, count), wv = Vec<T>::loadu(w + i, count);
            (gv * wv).store(pr + i, count);
            // as threshold_backward: zero where the unit is <= 0
            const Vec<T> gpre =
                Vec<T>::blendv(gv * Vec<T>::loadu(mr + i, count), zero, wv <= zero);
            gpre.store(g + i, count);
            (Vec<T>::loadu(sums + i, count) + gpre).store(sums + i, count);
          }
          sum_per_leaf(pr, leaves, leaf_width);
          T* q = qp + row * leaves;
          for (int64_t j = 0; j < leaves; ++j) q[j] = pr[j] + m[j] * gb[j];
        }
        double* block_sums = partial.data() + block * width;
        for (int64_t i = 0; i < width; ++i) block_sums[i] = static_cast<double>(sums[i]);
      }
    });
    T* out = bias_grad.data_ptr<T>();
    for (int64_t i = 0; i < width; ++i) {
      double total = 0.0;
      for (int64_t block = 0; block < blocks; ++block) total += partial[block * width + i];
      out[i] = static_cast<T>(total);
    }
  });
  return {terms, bias_grad};
}

}  // namespace fastff_soft

TORCH_LIBRARY_FRAGMENT(fastff, m) {
  m.def("fff_soft_routing_forward(Tensor logits, Tensor? swap, int depth) -> (Tensor, Tensor)");
  m.def(
      "fff_soft_routing_backward(Tensor logits, Tensor? swap, Tensor? leaf_grad, "
      "Tensor? mixture, Tensor? grad_entropy, int depth) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastff, CPU, m) {
  m.impl("fff_soft_routing_forward", &fastff_soft::fff_soft_routing_forward);
  m.impl("fff_soft_routing_backward", &fastff_soft::fff_soft_routing_backward);
}
