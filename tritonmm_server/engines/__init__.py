"""The model engines: plain Python (no Triton imports), one per bundled model.

Each ``model_repository/<model>/1/model.py`` only moves tensors in and out of its
engine through the adapters of :mod:`tritonmm_server.backend`, so an engine can be
tested in-process on a real (or tiny) checkpoint without a server.
"""
