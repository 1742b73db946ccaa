#pragma once
// Fused attention in double, entry by entry over the pattern: the reference of the kernel tests, with the
// random problems they run it on.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "test_values.hpp"
#include "spattn/spattn.hpp"

namespace spattn::testing {

constexpr double negative_infinity = -std::numeric_limits<double>::infinity();

// ---- problems ------------------------------------------------------------------------------------------
struct Shape {
  index_t images = 2;  // B
  index_t heads = 2;   // H: batch = B * H problems
  index_t head_dim = 32;
  index_t value_dim = 32;
  index_t bias_heads = 0;
  index_t masked_row = -1;  // a row whose entries the bias masks to -infinity (needs a bias)
  index_t head_group = 1;   // query heads per k/v head (grouped-query attention): k and v have heads / it
  bool grad_lse = false;    // a gradient reaching lse too (Inputs::grad_lse), else none
};

struct Inputs {
  AttentionDims dims;
  std::vector<double> q, k, v, bias, grad_out;
  std::vector<double> grad_lse;  // [batch, rows], or empty for none
};

inline Inputs make_inputs(const Csr& pattern, const Shape& shape, unsigned seed) {
  const index_t batch = shape.images * shape.heads, rows = pattern.rows(), cols = pattern.cols();
  const index_t kv_batch = batch / shape.head_group;
  Inputs inputs{{batch, shape.head_dim, shape.value_dim, shape.bias_heads, shape.heads, shape.head_group}, {}, {}, {},
                {}, {}, {}};
  inputs.q = random_values(batch * rows * shape.head_dim, seed + 1);
  inputs.k = random_values(kv_batch * cols * shape.head_dim, seed + 2);
  inputs.v = random_values(kv_batch * cols * shape.value_dim, seed + 3);
  inputs.grad_out = random_values(batch * rows * shape.value_dim, seed + 4);
  if (shape.grad_lse) inputs.grad_lse = random_values(batch * rows, seed + 6);
  inputs.bias = random_values(std::max<index_t>(shape.bias_heads, 1) * pattern.nnz(), seed + 5);
  if (shape.masked_row >= 0) {
    for (index_t head = 0; head < shape.bias_heads; ++head) {
      for (index_t e = pattern.row_offsets()[shape.masked_row]; e < pattern.row_offsets()[shape.masked_row + 1]; ++e) {
        inputs.bias[head * pattern.nnz() + e] = negative_infinity;
      }
    }
  }
  return inputs;
}

// The forward's out [batch, rows, Dv] and lse [batch, rows], the row terms delta = rowsum(dO * out), and the
// gradients (grad_bias [max(bias_heads, 1), nnz]).
struct Reference {
  std::vector<double> out, lse, delta, grad_q, grad_k, grad_v, grad_bias;
};

// Attention forward and backward in double, entry by entry over the pattern. Query problem p reads (and
// accumulates the gradients of) k/v problem kv = p / H * (H / g) + p % H / g; a gradient reaching lse adds
// P * grad_lse to the score gradients.
inline Reference reference_attention(const Csr& pattern, const Inputs& in, double scale) {
  const AttentionDims& dims = in.dims;
  const index_t rows = pattern.rows(), cols = pattern.cols(), nnz = pattern.nnz();
  const index_t D = dims.head_dim, Dv = dims.value_dim;
  const auto& offsets = pattern.row_offsets();
  const auto& columns = pattern.col_indices();
  Reference g;
  g.out.assign(dims.batch * rows * Dv, 0);
  g.lse.assign(dims.batch * rows, negative_infinity);
  g.delta.assign(dims.batch * rows, 0);
  g.grad_q.assign(dims.batch * rows * D, 0);
  g.grad_k.assign(dims.kv_batch() * cols * D, 0);
  g.grad_v.assign(dims.kv_batch() * cols * Dv, 0);
  g.grad_bias.assign(std::max<index_t>(dims.bias_heads, 1) * nnz, 0);
  for (index_t p = 0; p < dims.batch; ++p) {
    const double* bias = dims.bias_heads > 0 ? &in.bias[(p % dims.bias_heads) * nnz] : nullptr;
    const index_t kv = p / dims.heads * dims.kv_heads() + p % dims.heads / dims.head_group;
    for (index_t r = 0; r < rows; ++r) {
      const index_t begin = offsets[r], end = offsets[r + 1];
      std::vector<double> scores, values_dot;
      double maximum = negative_infinity;
      for (index_t e = begin; e < end; ++e) {
        double score = 0, value_dot = 0;
        for (index_t d = 0; d < D; ++d) score += in.q[(p * rows + r) * D + d] * in.k[(kv * cols + columns[e]) * D + d];
        for (index_t d = 0; d < Dv; ++d) {
          value_dot += in.grad_out[(p * rows + r) * Dv + d] * in.v[(kv * cols + columns[e]) * Dv + d];
        }
        scores.push_back(scale * score + (bias ? bias[e] : 0.0));
        values_dot.push_back(value_dot);
        maximum = std::max(maximum, scores.back());
      }
      if (maximum == negative_infinity) continue;  // empty or fully masked: zero gradients
      double sum = 0, delta = 0;
      for (double s : scores) sum += std::exp(s - maximum);
      for (std::size_t j = 0; j < scores.size(); ++j) delta += std::exp(scores[j] - maximum) / sum * values_dot[j];
      g.lse[p * rows + r] = maximum + std::log(sum);
      g.delta[p * rows + r] = delta;  // = rowsum(dO * out)
      const double grad_lse = in.grad_lse.empty() ? 0.0 : in.grad_lse[p * rows + r];
      for (index_t e = begin; e < end; ++e) {
        const double probability = std::exp(scores[e - begin] - maximum) / sum;
        const double score_grad = probability * (values_dot[e - begin] - delta + grad_lse);
        const index_t c = columns[e];
        for (index_t d = 0; d < D; ++d) {
          g.grad_q[(p * rows + r) * D + d] += scale * score_grad * in.k[(kv * cols + c) * D + d];
          g.grad_k[(kv * cols + c) * D + d] += scale * score_grad * in.q[(p * rows + r) * D + d];
        }
        for (index_t d = 0; d < Dv; ++d) {
          g.grad_v[(kv * cols + c) * Dv + d] += probability * in.grad_out[(p * rows + r) * Dv + d];
          g.out[(p * rows + r) * Dv + d] += probability * in.v[(kv * cols + c) * Dv + d];
        }
        if (bias) g.grad_bias[(p % dims.bias_heads) * nnz + e] += score_grad;
      }
    }
  }
  return g;
}

}  // namespace spattn::testing
