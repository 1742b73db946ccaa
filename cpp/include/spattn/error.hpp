#pragma once
// The one error type of spattn. Every check on user input throws it with a message that names the
// offending argument; the Python bindings turn it into ValueError.
//
// Messages are assembled with std::string and snprintf rather than iostreams: in a
// process where another library brought its own C++ runtime first (torch does), formatting through
// std::ostringstream and its locale machinery crashed on one build machine.

#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace spattn {

class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

inline void append(std::string& message, const char* text) { message += text; }
inline void append(std::string& message, const std::string& text) { message += text; }
inline void append(std::string& message, char c) { message += c; }
inline void append(std::string& message, bool value) { message += value ? "true" : "false"; }

template <typename Number, typename = std::enable_if_t<std::is_arithmetic_v<Number>>>
void append(std::string& message, Number value) {
  char buffer[32];
  if constexpr (std::is_floating_point_v<Number>) {
    std::snprintf(buffer, sizeof(buffer), "%g", static_cast<double>(value));
  } else if constexpr (std::is_signed_v<Number>) {
    std::snprintf(buffer, sizeof(buffer), "%lld", static_cast<long long>(value));
  } else {
    std::snprintf(buffer, sizeof(buffer), "%llu", static_cast<unsigned long long>(value));
  }
  message += buffer;
}

template <typename... Parts>
[[noreturn]] void throw_error(const Parts&... parts) {
  std::string message;
  (append(message, parts), ...);
  throw Error(message);
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
