#pragma once
// The one error type of spattn. Every check on user input throws it with a message that names the
// offending argument; the Python bindings turn it into ValueError.

#include <sstream>
#include <stdexcept>
#include <string>

namespace spattn {

class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <typename... Parts>
[[noreturn]] void throw_error(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(message.str());
}
}  // namespace detail

}  // namespace spattn

// SPATTN_CHECK(condition, "message parts", value, ...): throws spattn::Error when condition is false.
#define SPATTN_CHECK(condition, ...)                  \
  do {                                                \
    if (!(condition)) {                               \
      ::spattn::detail::throw_error(__VA_ARGS__);     \
    }                                                 \
  } while (false)
