"""The python-backend adapter layer: what the bundled ``model.py`` files share.

``errors`` and ``request_params`` are plain Python (engines raise and use them);
the adapters (``batched``, ``unbatched``, ``streaming``, ``responses``, ``model_setup``)
import ``triton_python_backend_utils`` and so load only inside the python-backend stub
(or under a stand-in of it in the unit tests). This package's ``__init__`` imports
nothing, so that engines can import ``errors`` anywhere.
"""

import locale

# The python-backend stub embeds an interpreter that starts in the C locale (it
# ignores PYTHONUTF8), so open() would decode files as ASCII and imports that read
# non-ASCII text fail (torch's inductor templates, loaded by llguidance's torch
# helpers for structured output). Take the locale of the environment, which the
# launcher makes UTF-8 (ops.binary.server_environment), before a model imports them.
try:
    locale.setlocale(locale.LC_CTYPE, "")
except locale.Error:  # an unknown locale name: keep the C locale rather than fail the load
    pass
