"""A module for tests of alprobe.sandbox.run_module: prints its pid, sleeps argv[1] s (120)."""

import os
import sys
import time

if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    print(os.getpid(), flush=True)
    time.sleep(seconds)
    print(f"slept {sys.argv[1] if len(sys.argv) > 1 else 120}", flush=True)
