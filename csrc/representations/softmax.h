// softmax / log_softmax along one dimension of a contiguous tensor, forward and backward,
// for float32, float64, float16 and bfloat16 (the last two computed in float32).
#pragma once

#include "fastlearn/view.h"

namespace fl::representations {

// y = softmax(x, dim) or log_softmax(x, dim); x, y: same shape, contiguous, same dtype.
void softmax_forward(const View& x, const View& y, int64_t dim, bool log);
// grad_x from grad_y and the forward output y (softmax: y*(g - <g,y>); log: g - exp(y)*sum g).
void softmax_backward(const View& grad_y, const View& y, const View& grad_x, int64_t dim, bool log);

}  // namespace fl::representations
