// Error reporting across the C ABI: every exported function returns 0 on success or a non-zero
// status, and leaves a message that Python reads with jmipose_{cpu,cuda}_last_error().  The message
// is per thread and per library (each library has its own copy of this inline function's static).
#pragma once

#include <cstdarg>
#include <cstdio>
#include <exception>
#include <string>

namespace jmipose {

inline std::string& last_error_storage() {
  thread_local std::string message;
  return message;
}

__attribute__((format(printf, 1, 2))) inline int fail(const char* fmt, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof(buffer), fmt, args);
  va_end(args);
  last_error_storage() = buffer;
  return 1;
}

// Runs body (a callable returning int status) and turns any C++ exception into an error status, so
// no exception ever crosses the C ABI into ctypes.
template <typename Body>
inline int guarded(const char* where, Body&& body) {
  try {
    last_error_storage().clear();
    return body();
  } catch (const std::exception& e) {
    return fail("%s: %s", where, e.what());
  } catch (...) {
    return fail("%s: unknown C++ exception", where);
  }
}

}  // namespace jmipose
