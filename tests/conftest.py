"""Test-session setup. Runs before any test module imports torch."""

import os

# Idle OpenMP threads sleep instead of spinning: on a small shared CPU (2 cores here, with other jobs),
# spinning threads made torch 4-5x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
