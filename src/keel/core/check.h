// KEEL_CHECK: an invariant that holds in release builds too. A failed check is a bug in the
// caller, so it prints where and why, then aborts.
#pragma once

#include <cstdio>
#include <cstdlib>

#define KEEL_CHECK(condition, message)                                                      \
  do {                                                                                      \
    if (!(condition)) [[unlikely]] {                                                        \
      std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", __FILE__, __LINE__, #condition, \
                   message);                                                                \
      std::abort();                                                                         \
    }                                                                                       \
  } while (false)
