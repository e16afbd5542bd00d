// Memory advice for freshly allocated outputs (see memory.h).
#include "fastlearn/memory.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace fl {

bool advise_huge_pages(uintptr_t data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // madvise takes whole base pages: the pages entirely inside [data, data + bytes).
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (data + page - 1) / page * page, end = (data + bytes) / page * page;
  if (end <= begin) return false;
  return madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE) == 0;
#else
  (void)data;
  (void)bytes;
  return false;
#endif
}

}  // namespace fl
