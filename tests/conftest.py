import sys
from pathlib import Path

# Test helpers (reference implementations, CMake driver) live next to the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))
