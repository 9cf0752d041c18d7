"""The python-backend adapter layer: what the bundled ``model.py`` files share.

``errors`` and ``request_params`` are plain Python (engines raise and use them);
the adapters (``batched``, ``unbatched``, ``streaming``, ``responses``, ``model_setup``)
import ``triton_python_backend_utils`` and so load only inside the python-backend stub
(or under a stand-in of it in the unit tests). This package's ``__init__`` imports
nothing, so that engines can import ``errors`` anywhere.
"""
