// Block layouts of the sparse transformers.

#include "check.hpp"
#include "spattn/spattn.hpp"

TEST_MAIN()
