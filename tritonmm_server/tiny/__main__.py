"""``python -m tritonmm_server.tiny --arch ARCH --out DIR``: build one tiny checkpoint."""

import sys

from tritonmm_server.tiny.build import main

sys.exit(main())
