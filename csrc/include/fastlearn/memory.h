// Memory advice for large outputs the kernels are about to write for the first time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fl {

// Asks the kernel (Linux, transparent huge pages in "madvise" mode or "always") to back the
// pages of [data, data + bytes) with huge pages when they are first touched: one fault per
// 2 MiB instead of per 4 KiB. A freshly allocated 800 MB output otherwise costs ~200,000 page
// faults, most of a one_hot's or a new softmax output's time. Advice only: the contents and
// the allocation's owner are unchanged. Returns whether the kernel accepted it (false off
// Linux, for a range smaller than a page, or where THP is compiled out).
bool advise_huge_pages(uintptr_t data, size_t bytes);

}  // namespace fl
