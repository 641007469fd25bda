// The whole FFF soft (training) step with a ReLU on the CPU as one autograd op.
//
// The same computation as SoftFFFFunction in fastff/layers/fff_soft_fused.py with the routing
// and leaf kernels of fff_soft_routing_cpu.cpp, but the forward, the backward and the autograd
// node are C++: for small layers the Python path's per-op overhead (a Python autograd function,
// a dozen torch calls per direction) cost as much as the matrix products.
//
// Shapes (B inputs, D in, O out, l leaf width, d depth, L = 2**d leaves, N = L - 1 nodes,
// H = L * l hidden units): x (B, D); node_weights (N, D); node_biases (N, 1); w1s (L, D, l);
// b1s (L, l); w2s (L, l, O); b2s (L, O); swap (B, N) bool or None (region leak). All floating
// tensors on the CPU in one dtype, float32 or float64.
//
// torch.ops.fastff.fff_soft_train(x, node_weights, node_biases, w1s, b1s, w2s, b2s, first_layer,
//     first_bias, second_layer, swap, aux_scale, depth) -> (y (B, O), aux (), mean node entropy
//     (N,)); first_layer, first_bias, second_layer: the tensors the parameters are views of (see
//     Packed), or all None; y and the hardening loss aux = aux_scale * sum of the mean node
//     entropies are differentiable in x and the six parameters; the entropies (for logging) are
//     not.

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "fff_soft_cpu.h"

namespace {

struct Sizes {
  int64_t batch, in, out, leaves, leaf_width, hidden, nodes;
};

Sizes check_step(const at::Tensor& x, const at::Tensor& node_weights, const at::Tensor& w1s,
                 const at::Tensor& w2s, const at::Tensor& b2s, int64_t depth) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat ||
                                      x.scalar_type() == at::kDouble),
              "fff_soft_train: x must be a float32 or float64 CPU tensor");
  TORCH_CHECK(x.dim() == 2 && w1s.dim() == 3 && w2s.dim() == 3 && b2s.dim() == 2 &&
                  node_weights.dim() == 2,
              "fff_soft_train: x (B, D), node_weights (N, D), w1s (L, D, l), w2s (L, l, O), "
              "b2s (L, O)");
  for (const at::Tensor* t : {&node_weights, &w1s, &w2s, &b2s}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device().is_cpu(),
                "fff_soft_train: parameters must be CPU tensors in x's dtype");
  }
  Sizes s{x.size(0), x.size(1), w2s.size(2), w1s.size(0), w1s.size(2), 0, node_weights.size(0)};
  s.hidden = s.leaves * s.leaf_width;
  TORCH_CHECK(depth >= 1 && depth <= 30 && s.leaves == (int64_t(1) << depth) &&
                  s.nodes == s.leaves - 1 && w1s.size(1) == s.in && node_weights.size(1) == s.in &&
                  w2s.size(0) == s.leaves && w2s.size(1) == s.leaf_width &&
                  b2s.size(0) == s.leaves && b2s.size(1) == s.out,
              "fff_soft_train: parameter shapes do not match depth ", depth);
  return s;
}

// Row j * l + k is leaf j's hidden unit k (a view when w1s is stored neuron-major).
at::Tensor first_layer(const at::Tensor& w1s, const Sizes& s) {
  return w1s.transpose(1, 2).reshape({s.hidden, s.in});
}

// [w2s as (H, O); b2s] (H + L, O): the leaf outputs' weights and biases as one matrix.
at::Tensor second_layer(const at::Tensor& w2s, const at::Tensor& b2s, const Sizes& s) {
  return at::cat({w2s.reshape({s.hidden, s.out}), b2s}, 0);
}

// The FFF's parameters packed (see FFF._pack_parameters): first (H + P, D) holds the leaf neurons
// (the (H, D) view of w1s) in rows [0, H), the node weights in rows [H, H + N) and zeros up to
// H + P (P: N rounded up to a multiple of 16, so P >= L); first_bias (H + P) holds b1s, the node
// biases and zeros the same way; second (H + L, O) holds w2s as (H, O) and then b2s. The six
// parameters are views of them. Then hidden units and node logits are one matrix product, and
// so are their weight gradients (and x's): at small widths a separate (B, N) product cost as
// much as a quarter of the step; and no per-step concatenation is needed.
struct Packed {
  at::Tensor first, first_bias, second;
  int64_t padded = 0;  // P
  bool defined() const { return first.defined(); }
};

bool starts_at(const at::Tensor& view, const at::Tensor& base, int64_t offset) {
  return view.data_ptr() ==
         static_cast<const char*>(base.data_ptr()) + offset * base.element_size();
}

// The packed tensors if the six parameters are (still) views of them as described above, else
// an undefined Packed: the step then multiplies the parameters one by one (e.g. after
// load_state_dict(assign=True) replaced them).
Packed check_packed(const c10::optional<at::Tensor>& first,
                    const c10::optional<at::Tensor>& first_bias,
                    const c10::optional<at::Tensor>& second, const at::Tensor& node_weights,
                    const at::Tensor& node_biases, const at::Tensor& w1s, const at::Tensor& b1s,
                    const at::Tensor& w2s, const at::Tensor& b2s, const Sizes& s) {
  const bool given = first.has_value() && first->defined();
  TORCH_CHECK(given == (first_bias.has_value() && first_bias->defined()) &&
                  given == (second.has_value() && second->defined()),
              "fff_soft_train: first_layer, first_bias and second_layer go together");
  if (!given) return {};
  const int64_t padded = first->size(0) - s.hidden;
  bool views = true;
  for (const at::Tensor* t : {&*first, &*first_bias, &*second}) {
    views = views && t->is_contiguous() && t->scalar_type() == w1s.scalar_type() &&
            t->device() == w1s.device();
  }
  views = views && first->dim() == 2 && first->size(1) == s.in && padded >= s.leaves &&
          first_bias->dim() == 1 && first_bias->size(0) == s.hidden + padded &&
          second->dim() == 2 && second->size(0) == s.hidden + s.leaves &&
          second->size(1) == s.out;
  views = views && starts_at(w1s, *first, 0) && w1s.stride(0) == s.leaf_width * s.in &&
          w1s.stride(1) == 1 && w1s.stride(2) == s.in &&
          starts_at(node_weights, *first, s.hidden * s.in) && node_weights.stride(0) == s.in &&
          node_weights.stride(1) == 1 && starts_at(b1s, *first_bias, 0) && b1s.is_contiguous() &&
          starts_at(node_biases, *first_bias, s.hidden) && node_biases.is_contiguous() &&
          starts_at(w2s, *second, 0) && w2s.is_contiguous() &&
          starts_at(b2s, *second, s.hidden * s.out) && b2s.is_contiguous();
  if (!views) return {};
  return {*first, *first_bias, *second, padded};
}

// (y, mean node entropy, and for the backward: logits (B, N), mixed (B, H + L) = [weighted
// hidden units | mixture]).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fff_soft_train_forward(
    const at::Tensor& x, const at::Tensor& node_weights, const at::Tensor& node_biases,
    const at::Tensor& w1s, const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s,
    const Packed& packed, const c10::optional<at::Tensor>& swap, int64_t depth) {
  const Sizes s = check_step(x, node_weights, w1s, w2s, b2s, depth);
  at::Tensor logits, hidden;
  if (packed.defined()) {
    const at::Tensor out = at::addmm(packed.first_bias, x, packed.first.t());  // (B, H + P)
    hidden = out.narrow(1, 0, s.hidden);
    // the routing kernel reads contiguous logits
    logits = out.narrow(1, s.hidden, s.nodes).contiguous();
  } else {
    logits = at::addmm(node_biases.reshape({-1}), x, node_weights.t());
    hidden = at::addmm(b1s.reshape({-1}), x, first_layer(w1s, s).t());  // (B, H)
  }
  auto [mixture, entropy_mean] = fastff_soft::fff_soft_routing_forward(logits, swap, depth);
  // [weighted hidden units | mixture] (B, H + L) times [w2s as (H, O); b2s]: the leaf outputs
  // and their biases in one product
  at::Tensor mixed = fastff_soft::leaf_forward_mixed(hidden, mixture, s.leaf_width);
  at::Tensor y = at::mm(mixed, packed.defined() ? packed.second : second_layer(w2s, b2s, s));
  return {y, entropy_mean, logits, mixed};
}

// The gradients of (x, node_weights, node_biases, w1s, b1s, w2s, b2s), undefined where needs (in
// that order) is false or no gradient flows; grad_y (B, O) and grad_entropy (N,) may be
// undefined (that output is unused); packed_first and packed_second as in Packed (or undefined);
// mixed as the forward returns it.
std::vector<at::Tensor> fff_soft_train_backward(
    const at::Tensor& grad_y, const at::Tensor& grad_entropy,
    const at::Tensor& x, const at::Tensor& node_weights, const at::Tensor& w1s,
    const at::Tensor& w2s, const at::Tensor& b2s, const at::Tensor& logits,
    const at::Tensor& mixed, const at::Tensor& packed_first, const at::Tensor& packed_second,
    const c10::optional<at::Tensor>& swap, int64_t depth, std::array<bool, 7> needs) {
  const Sizes s = check_step(x, node_weights, w1s, w2s, b2s, depth);
  enum { X, NODE_W, NODE_B, W1, B1, W2, B2 };
  std::vector<at::Tensor> grads(7);
  const bool has_y = grad_y.defined(), has_entropy = grad_entropy.defined();
  const bool routes = (has_y || has_entropy) && (needs[X] || needs[NODE_W] || needs[NODE_B]);
  // with packed, the left operand of one product for the weight and input gradients:
  // [dLoss/dpre, dLoss/dlogits, 0] (B, H + P)
  const bool merged = packed_first.defined() && has_y && routes;
  const int64_t padded = packed_first.defined() ? packed_first.size(0) - s.hidden : 0;
  at::Tensor merged_grads;
  at::Tensor grad_pre;  // dLoss/d(weighted), then dLoss/d(pre-activation) (B, H)
  c10::optional<at::Tensor> leaf_terms;  // q = dLoss/dm * m (B, L)
  if (has_y) {
    const at::Tensor gy = grad_y.contiguous();
    // dLoss/d[weighted | mixture] (B, H + L): the first H + L columns of merged_grads (P >= L)
    merged_grads = at::empty({s.batch, s.hidden + (merged ? padded : s.leaves)}, x.options());
    at::Tensor grad_mixed = merged_grads.narrow(1, 0, s.hidden + s.leaves);
    const at::Tensor second =
        packed_second.defined() ? packed_second : second_layer(w2s, b2s, s);
    at::mm_out(grad_mixed, gy, second.t());
    grad_pre = merged_grads.narrow(1, 0, s.hidden);  // becomes dLoss/dpre in place
    if (needs[W2] || needs[B2]) {
      // (O, H + L): the (H + L, B) x (B, O) form is much slower for small O
      const at::Tensor both = at::mm(gy.t(), mixed).t();
      if (needs[W2]) grads[W2] = both.narrow(0, 0, s.hidden).view({s.leaves, s.leaf_width, s.out});
      if (needs[B2]) grads[B2] = both.narrow(0, s.hidden, s.leaves);
    }
    auto [terms, bias_grad] = fastff_soft::leaf_backward_mixed(
        grad_pre, mixed, grad_mixed.narrow(1, s.hidden, s.leaves), s.leaf_width);
    leaf_terms = terms;
    if (needs[B1]) grads[B1] = bias_grad.view({s.leaves, s.leaf_width});
  }
  at::Tensor grad_logits;  // (B, N)
  if (routes) {
    c10::optional<at::Tensor> ge;
    if (has_entropy) ge = grad_entropy.to(logits.scalar_type()).contiguous();
    grad_logits =
        fastff_soft::fff_soft_routing_backward(logits, swap, leaf_terms, c10::nullopt, ge, depth);
    if (needs[NODE_B]) grads[NODE_B] = grad_logits.sum(0).unsqueeze(1);
  }
  const auto leaf_gradient = [&](const at::Tensor& first_grads) {  // (H, D) -> w1s's (L, D, l)
    return first_grads.view({s.leaves, s.leaf_width, s.in}).transpose(1, 2);
  };
  if (merged) {
    merged_grads.narrow(1, s.hidden, s.nodes).copy_(grad_logits);
    merged_grads.narrow(1, s.hidden + s.nodes, padded - s.nodes).zero_();
    if (needs[NODE_W] && needs[W1]) {
      const at::Tensor both = at::mm(merged_grads.t(), x);  // (H + P, D)
      grads[W1] = leaf_gradient(both.narrow(0, 0, s.hidden));
      grads[NODE_W] = both.narrow(0, s.hidden, s.nodes);
    } else if (needs[NODE_W]) {
      grads[NODE_W] = at::mm(grad_logits.t(), x);
    } else if (needs[W1]) {
      grads[W1] = leaf_gradient(at::mm(grad_pre.t(), x));
    }
    if (needs[X]) grads[X] = at::mm(merged_grads, packed_first);
    return grads;
  }
  if (has_y && needs[W1]) grads[W1] = leaf_gradient(at::mm(grad_pre.t(), x));
  if (routes && needs[NODE_W]) grads[NODE_W] = at::mm(grad_logits.t(), x);
  if (needs[X]) {
    if (has_y) grads[X] = at::mm(grad_pre, first_layer(w1s, s));
    if (routes) {
      grads[X] = grads[X].defined() ? grads[X].addmm_(grad_logits, node_weights)
                                    : at::mm(grad_logits, node_weights);
    }
  }
  return grads;
}

// The checked forward with the hardening loss aux = aux_scale * sum of the mean node entropies.
struct Step {
  at::Tensor y, aux, entropy_mean, logits, mixed;
  Packed packed;
};

Step checked_forward(const at::Tensor& x, const at::Tensor& node_weights,
                     const at::Tensor& node_biases, const at::Tensor& w1s, const at::Tensor& b1s,
                     const at::Tensor& w2s, const at::Tensor& b2s,
                     const c10::optional<at::Tensor>& first_layer,
                     const c10::optional<at::Tensor>& first_bias,
                     const c10::optional<at::Tensor>& second_layer,
                     const c10::optional<at::Tensor>& swap, double aux_scale, int64_t depth) {
  const Sizes s = check_step(x, node_weights, w1s, w2s, b2s, depth);
  Step step;
  step.packed = check_packed(first_layer, first_bias, second_layer, node_weights, node_biases,
                             w1s, b1s, w2s, b2s, s);
  std::tie(step.y, step.entropy_mean, step.logits, step.mixed) = fff_soft_train_forward(
      x, node_weights, node_biases, w1s, b1s, w2s, b2s, step.packed, swap, depth);
  step.aux = step.entropy_mean.sum().mul_(aux_scale);
  return step;
}

// Saved for the backward: x, node_weights, w1s, w2s, b2s, logits, mixed, packed first, packed
// second, swap.
class SoftTrainStep : public torch::autograd::Function<SoftTrainStep> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& x,
      const at::Tensor& node_weights, const at::Tensor& node_biases, const at::Tensor& w1s,
      const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s,
      const c10::optional<at::Tensor>& first_layer, const c10::optional<at::Tensor>& first_bias,
      const c10::optional<at::Tensor>& second_layer, const c10::optional<at::Tensor>& swap,
      double aux_scale, int64_t depth) {
    const Step step = checked_forward(x, node_weights, node_biases, w1s, b1s, w2s, b2s,
                                      first_layer, first_bias, second_layer, swap, aux_scale,
                                      depth);
    ctx->save_for_backward({x, node_weights, w1s, w2s, b2s, step.logits, step.mixed,
                            step.packed.first, step.packed.second,
                            swap.has_value() ? *swap : at::Tensor()});
    ctx->saved_data["depth"] = depth;
    ctx->saved_data["aux_scale"] = aux_scale;
    ctx->mark_non_differentiable({step.entropy_mean});
    ctx->set_materialize_grads(false);
    return {step.y, step.aux, step.entropy_mean};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "fff_soft_train has no double backward (create_graph=True); set the FFF's "
                "soft_implementation to 'composite' for that");
    const auto saved = ctx->get_saved_variables();
    std::array<bool, 7> needs{};
    for (size_t i = 0; i < needs.size(); ++i) needs[i] = ctx->needs_input_grad(i);
    c10::optional<at::Tensor> swap;
    if (saved[9].defined()) swap = saved[9];
    // dLoss/d(mean entropy) (N,) = dLoss/daux * aux_scale; none when the loss ignores aux
    const double aux_scale = ctx->saved_data["aux_scale"].toDouble();
    at::Tensor grad_entropy;
    if (grads[1].defined() && aux_scale != 0.0) {
      grad_entropy = (grads[1] * aux_scale).expand({saved[1].size(0)});
    }
    auto result = fff_soft_train_backward(
        grads[0], grad_entropy, saved[0], saved[1], saved[2], saved[3], saved[4], saved[5],
        saved[6], saved[7], saved[8], swap, ctx->saved_data["depth"].toInt(), needs);
    result.resize(13);  // the packed tensors, swap, aux_scale and depth get none
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> fff_soft_train(
    const at::Tensor& x, const at::Tensor& node_weights, const at::Tensor& node_biases,
    const at::Tensor& w1s, const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s,
    const c10::optional<at::Tensor>& first_layer, const c10::optional<at::Tensor>& first_bias,
    const c10::optional<at::Tensor>& second_layer, const c10::optional<at::Tensor>& swap,
    double aux_scale, int64_t depth) {
  auto outputs = SoftTrainStep::apply(x, node_weights, node_biases, w1s, b1s, w2s, b2s,
                                      first_layer, first_bias, second_layer, swap, aux_scale,
                                      depth);
  return {outputs[0], outputs[1], outputs[2]};
}

// Without autograd (inference mode, where the Autograd key is skipped): the forward alone.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fff_soft_train_no_grad(
    const at::Tensor& x, const at::Tensor& node_weights, const at::Tensor& node_biases,
    const at::Tensor& w1s, const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s,
    const c10::optional<at::Tensor>& first_layer, const c10::optional<at::Tensor>& first_bias,
    const c10::optional<at::Tensor>& second_layer, const c10::optional<at::Tensor>& swap,
    double aux_scale, int64_t depth) {
  const Step step = checked_forward(x, node_weights, node_biases, w1s, b1s, w2s, b2s,
                                    first_layer, first_bias, second_layer, swap, aux_scale,
                                    depth);
  return {step.y, step.aux, step.entropy_mean};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastff, m) {
  m.def(
      "fff_soft_train(Tensor x, Tensor node_weights, Tensor node_biases, Tensor w1s, "
      "Tensor b1s, Tensor w2s, Tensor b2s, Tensor? first_layer, Tensor? first_bias, "
      "Tensor? second_layer, Tensor? swap, float aux_scale, int depth) "
      "-> (Tensor, Tensor, Tensor)");
}

// Autograd (every backend key's autograd) runs the C++ autograd function; its forward checks
// that the tensors are CPU float32/float64 and calls no other op through this one.
TORCH_LIBRARY_IMPL(fastff, Autograd, m) { m.impl("fff_soft_train", &fff_soft_train); }

TORCH_LIBRARY_IMPL(fastff, CPU, m) { m.impl("fff_soft_train", &fff_soft_train_no_grad); }
