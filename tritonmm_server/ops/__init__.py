"""Operations: the launcher's command line, planning the weights of each model, rendering the
model repository, running tritonserver and keeping track of a background server.

Stdlib only at import time (no torch, no plugin-side settings): the launcher starts fast and
runs in any environment that has the server's requirements.
"""
