// The FFF soft (training) kernels on the CPU, shared by fff_soft_routing_cpu.cpp (which defines
// them: routing and the elementwise leaf passes) and fff_soft_train_cpu.cpp (the whole training
// step built from them and ATen's matrix products). See those files for the math and shapes.
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

at::Tensor fff_soft_leaf_forward(at::Tensor pre, const at::Tensor& mix, int64_t leaf_width);

// The same, returning (B, H + L) [weighted hidden units | mixture] when append_mixture.
at::Tensor leaf_forward_impl(at::Tensor pre, const at::Tensor& mix, int64_t leaf_width,
                             bool append_mixture);

std::tuple<at::Tensor, at::Tensor> fff_soft_leaf_backward(at::Tensor grad_weighted,
                                                          const at::Tensor& hidden,
                                                          const at::Tensor& mix,
                                                          int64_t leaf_width, bool relu);

// The same; without with_work, work is neither written nor returned (undefined).
std::tuple<at::Tensor, at::Tensor> leaf_backward_impl(at::Tensor grad_weighted,
                                                      const at::Tensor& hidden,
                                                      const at::Tensor& mix, int64_t leaf_width,
                                                      bool relu, bool with_work);

}  // namespace fastff_soft
