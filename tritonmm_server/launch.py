"""The launcher's command: ``python -m tritonmm_server.launch [serve|fetch|stop] ...``.

The work is in :mod:`tritonmm_server.ops`; this module only keeps the command name stable.
"""

from __future__ import annotations

import sys

from tritonmm_server.ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
