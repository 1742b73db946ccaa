// Prints the number of entries of the Swin stage-1 pattern (56 x 56 tokens, window 7, shift 3).
#include <spattn/spattn.hpp>

#include <cstdio>

int main() {
  const spattn::Csr pattern = spattn::patterns::swin(56, 56, 7, 3);
  std::printf("%lld\n", static_cast<long long>(pattern.nnz()));
  try {
    spattn::patterns::swin(56, 56, 7, 7);
  } catch (const spattn::Error& error) {
    std::printf("error: %s\n", error.what());
  }
  return 0;
}
