// Fused scaled-dot-product attention on the CPU (flash-attention algorithm): forward with an
// online softmax that saves the log-sum-exp, backward that recomputes the probabilities.
// float32 and float64; the Python layer converts float16/bfloat16 to float32 and back.
#pragma once

#include <cstdint>

#include "fastlearn/view.h"

namespace fl::attention {

// Scalars of one call. The views carry the tensors:
//   query    batch x heads_q  x len_q  x dim_qk   (contiguous)
//   key      batch x heads_kv x len_kv x dim_qk   (contiguous), heads_q % heads_kv == 0 (GQA)
//   value    batch x heads_kv x len_kv x dim_v    (contiguous)
//   bias     batch x heads_q  x len_q  x len_kv   (any strides, 0 for broadcast dims) or empty
//   out      batch x heads_q  x len_q  x dim_v    (contiguous)
//   lse      batch x heads_q  x len_q             (contiguous; +inf for a row with no key)
struct Options {
  double scale = 1.0;
  bool causal = false;      // key j is visible to query i iff j <= i (top-left, as PyTorch)
  double dropout_p = 0.0;   // probability of zeroing an attention weight (kept ones / (1 - p))
  uint64_t seed = 0;        // dropout mask = hash(seed, batch*heads_q + head, i, j)
};

void forward(const View& query, const View& key, const View& value, const View* bias, const View& out,
             const View& lse, const Options& opt);

// grad_query/key/value (same shapes as the inputs, contiguous) from grad_out and the forward's
// out and lse.
void backward(const View& grad_out, const View& query, const View& key, const View& value, const View* bias,
              const View& out, const View& lse, const View& grad_query, const View& grad_key,
              const View& grad_value, const Options& opt);

// The dropout keep-mask of one (batch*heads_q + head, row, column), exposed for tests.
bool dropout_keep(uint64_t seed, int64_t bh, int64_t row, int64_t col, double p);

}  // namespace fl::attention
