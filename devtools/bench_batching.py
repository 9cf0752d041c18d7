"""Chat throughput with batching on vs off, through Triton or ``--engine`` in process (a GPU
machine without Triton): the command of :mod:`devtools.bench.batching`, kept under this name.

    python -m devtools.bench_batching --engine --device cuda --model realsize --dtype bfloat16
"""

import sys

from devtools.bench.batching import main

if __name__ == "__main__":
    sys.exit(main())
