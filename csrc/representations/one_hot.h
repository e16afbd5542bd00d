// one_hot: integer labels (any shape) -> int64 (*labels.shape, num_classes) of zeros and ones.
#pragma once

#include "fastlearn/view.h"

namespace fl::representations {

// Checks every label is in [0, num_classes) (ValueError naming the first bad one) and writes
// every element of `out`; `out` need not be initialised.
void one_hot(const View& labels, const View& out, int64_t num_classes);

}  // namespace fl::representations
