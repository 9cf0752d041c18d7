"""Tiny random-weight checkpoints built locally from configs (no download).

The product uses two of them when no real checkpoint is given: ``idefics3`` for chat and
``clip`` for the multimodal-embedding and image-text match models (:mod:`.product`). The
other architectures exist for the tests only and live apart (:mod:`.fixtures`).
:func:`tritonmm_server.tiny.cache.ensure_tiny_model` builds one into a work dir once and
reuses it; importing this package imports nothing heavy.
"""
