#pragma once
// A minimal test harness: CHECK records a failure and carries on, main() returns the failure count.
// Enough for plain unit tests without pulling a test framework into the build.

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "spattn/error.hpp"

namespace spattn_test {

inline int& failures() {
  static int count = 0;
  return count;
}

struct TestCase {
  const char* name;
  std::function<void()> body;
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct Register {
  Register(const char* name, std::function<void()> body) { registry().push_back({name, std::move(body)}); }
};

inline int run_all() {
  for (const auto& test : registry()) {
    const int before = failures();
    try {
      test.body();
    } catch (const std::exception& error) {
      std::printf("  unexpected exception: %s\n", error.what());
      ++failures();
    }
    std::printf("%s %s\n", failures() == before ? "[ ok ]" : "[FAIL]", test.name);
  }
  std::printf("%zu tests, %d failed checks\n", registry().size(), failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace spattn_test

#define SPATTN_CONCAT_(a, b) a##b
#define SPATTN_CONCAT(a, b) SPATTN_CONCAT_(a, b)
#define TEST(name)                                                                         \
  static void name();                                                                      \
  static spattn_test::Register SPATTN_CONCAT(register_, name)(#name, name);                \
  static void name()

#define CHECK(condition)                                                                   \
  do {                                                                                     \
    if (!(condition)) {                                                                    \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #condition);          \
      ++spattn_test::failures();                                                           \
    }                                                                                      \
  } while (false)

// The statement must throw spattn::Error whose message contains `fragment`.
#define CHECK_THROWS(statement, fragment)                                                  \
  do {                                                                                     \
    bool thrown = false;                                                                   \
    try {                                                                                  \
      statement;                                                                           \
    } catch (const spattn::Error& error) {                                                 \
      thrown = std::string(error.what()).find(fragment) != std::string::npos;              \
      if (!thrown) std::printf("  message was: %s\n", error.what());                      \
    }                                                                                      \
    if (!thrown) {                                                                         \
      std::printf("  %s:%d: %s did not throw an error mentioning '%s'\n", __FILE__, __LINE__, \
                  #statement, fragment);                                                   \
      ++spattn_test::failures();                                                           \
    }                                                                                      \
  } while (false)

#define TEST_MAIN() \
  int main() { return spattn_test::run_all(); }
