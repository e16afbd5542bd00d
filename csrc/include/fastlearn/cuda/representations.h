// CUDA launchers of the representations domain (kernels/cuda/representations/*.cu). They
// launch on the view's stream, never synchronise, and check the launch.
#pragma once

#include "fastlearn/view.h"

namespace fl::cuda {

void softmax_forward(const View& x, const View& y, int64_t dim, bool log);
void softmax_backward(const View& grad_y, const View& y, const View& grad_x, int64_t dim, bool log);
void one_hot(const View& labels, const View& out, int64_t num_classes);

}  // namespace fl::cuda
