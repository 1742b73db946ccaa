#pragma once
// Test inputs for the kernel tests, shared by every test program: values that every storage type holds
// exactly, and conversions between the storage types and double.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "spattn/spattn.hpp"

namespace spattn::testing {

// Multiples of 1/64 in [-2, 2]: exact in bfloat16, so every type sees the same inputs.
inline std::vector<double> random_values(index_t count, unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_int_distribution<int> step(-128, 128);
  std::vector<double> values(static_cast<std::size_t>(count));
  for (auto& value : values) value = step(engine) / 64.0;
  return values;
}

inline double to_double(double value) { return value; }
inline double to_double(float value) { return value; }
inline double to_double(bfloat16 value) {
  const std::uint32_t bits = static_cast<std::uint32_t>(value.bits) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

// Exact for the test inputs (truncating to bfloat16 loses nothing of a multiple of 1/64); NaN stays NaN.
template <typename T>
T from_double(double value) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    const float single = static_cast<float>(value);
    std::uint32_t bits;
    std::memcpy(&bits, &single, sizeof(bits));
    return bfloat16{static_cast<std::uint16_t>(bits >> 16)};
  } else {
    return static_cast<T>(value);
  }
}

template <typename T>
std::vector<T> convert(const std::vector<double>& values) {
  std::vector<T> result(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) result[i] = from_double<T>(values[i]);
  return result;
}

// Tolerances relative to the largest reference magnitude: float64 must match a float64 reference to 1e-10.
template <typename T>
double tolerance() {
  if constexpr (std::is_same_v<T, double>) return 1e-10;
  if constexpr (std::is_same_v<T, float>) return 1e-4;
  return 3e-2;
}

// Within tolerance<T>() of the largest finite reference magnitude (at least 1); an infinite reference
// (a row's -infinity log-sum-exp) must be matched exactly; NaN never passes.
template <typename T>
bool close(const std::vector<T>& actual, const std::vector<double>& expected) {
  if (actual.size() != expected.size()) return false;
  double scale = 1;
  for (double value : expected) {
    if (std::isfinite(value)) scale = std::max(scale, std::abs(value));
  }
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = to_double(actual[i]), e = expected[i];
    if (std::isinf(e) ? a == e : std::abs(a - e) <= tolerance<T>() * scale) continue;
    std::printf("  element %zu: got %.12g, expected %.12g\n", i, a, e);
    return false;
  }
  return true;
}

}  // namespace spattn::testing
