#pragma once
// What every fused attention launcher (attention_forward.cu, attention_forward_grouped.cu,
// attention_backward.cu) does with its arguments before its own work: the checks of the sizes, the bias and the
// heads, and the fields that all their kernels' argument blocks share. One place, so that the launchers accept
// the same calls and fill their blocks alike.

#include "device_types.cuh"
#include "spattn/error.hpp"

namespace spattn::cuda::detail {

// `launcher` begins each message ("attention_forward: ...").
inline void check_attention_arguments(const char* launcher, CsrView pattern, const void* bias, AttentionDims dims,
                                      const AttentionLayouts& layouts) {
  SPATTN_CHECK(dims.batch >= 0 && pattern.rows >= 0 && pattern.cols >= 0, launcher, ": negative size");
  // (A bias of zero entries may arrive as a null pointer with bias_heads > 0; it is never read.)
  SPATTN_CHECK(dims.bias_heads >= 0 && (bias == nullptr || dims.bias_heads > 0), launcher,
               ": a bias needs bias_heads >= 1, got ", dims.bias_heads);
  SPATTN_CHECK(dims.heads >= 1 && dims.batch % dims.heads == 0, launcher, ": heads must divide the batch ",
               dims.batch, ", got ", dims.heads);
  SPATTN_CHECK(dims.head_group >= 1 && dims.heads % dims.head_group == 0, launcher, ": head_group must divide the ",
               dims.heads, " heads, got ", dims.head_group);
  // The kernels address k and v through their layouts and size the gradients and the workspace by dims: both
  // must say the same (q and out have a row per query head).
  SPATTN_CHECK(layouts.k.head_group == dims.head_group && layouts.v.head_group == dims.head_group, launcher,
               ": the layouts of k and v must have head_group ", dims.head_group, ", got ", layouts.k.head_group,
               " and ", layouts.v.head_group);
  SPATTN_CHECK(layouts.q.head_group == 1 && layouts.out.head_group == 1 && layouts.grad_out.head_group == 1,
               launcher, ": q, out and grad_out have a row per query head (head_group 1 in their layouts)");
}

// The fields ForwardArguments, GroupedArguments and BackwardArguments have in common; each launcher sets out,
// lse and the rest.
template <typename Arguments, typename T>
void fill_shared_arguments(Arguments& args, CsrView pattern, const T* q, const T* k, const T* v, const T* bias,
                           AttentionDims dims, const AttentionLayouts& layouts, double scale) {
  args.rows = pattern.rows;
  args.cols = pattern.cols;
  args.batch = dims.batch;
  args.head_dim = dims.head_dim;
  args.value_dim = dims.value_dim;
  args.bias_heads = dims.bias_heads;
  args.row_offsets = pattern.row_offsets;
  args.col_indices = pattern.col_indices;
  args.q = to_device(q);
  args.k = to_device(k);
  args.v = to_device(v);
  args.bias = to_device(bias);
  args.scale = static_cast<float>(scale);
  args.heads = dims.heads;
  args.q_layout = layouts.q;
  args.k_layout = layouts.k;
  args.v_layout = layouts.v;
  args.out_layout = layouts.out;
}

}  // namespace spattn::cuda::detail
