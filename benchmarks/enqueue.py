"""`python -m benchmarks.enqueue SYSTEM WORKLOAD N`: push N jobs in SYSTEM's own format (run by the harness)."""

import importlib
import sys


def main() -> None:
    system, workload, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    importlib.import_module(f"benchmarks.sys_{system}").enqueue(workload, n)


if __name__ == "__main__":
    main()
