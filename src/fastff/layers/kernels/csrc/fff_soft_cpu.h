// The FFF soft (training) kernels on the CPU that fff_soft_train_cpu.cpp (the whole ReLU training
// step, from them and ATen's matrix products) takes from fff_soft_routing_cpu.cpp (which defines
// them: routing and the elementwise leaf passes). See those files for the math and shapes.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace fastff_soft {

std::tuple<at::Tensor, at::Tensor> fff_soft_routing_forward(
    const at::Tensor& logits, const c10::optional<at::Tensor>& swap, int64_t depth);

at::Tensor fff_soft_routing_backward(const at::Tensor& logits,
                                     const c10::optional<at::Tensor>& swap,
                                     const c10::optional<at::Tensor>& leaf_grad,
                                     const c10::optional<at::Tensor>& mixture,
                                     const c10::optional<at::Tensor>& grad_entropy,
                                     int64_t depth);

// The whole ReLU step's leaf passes (see fff_soft_routing_cpu.cpp): mixed (B, H + L) =
// [relu(pre) * m | m], and from it and the gradients, (q (B, L), dLoss/db1 (H,)).
at::Tensor leaf_forward_mixed(const at::Tensor& pre, const at::Tensor& mix, int64_t leaf_width);

std::tuple<at::Tensor, at::Tensor> leaf_backward_mixed(at::Tensor grad_weighted,
                                                       const at::Tensor& mixed,
                                                       const at::Tensor& grad_bias_mix,
                                                       int64_t leaf_width);

}  // namespace fastff_soft
