"""Server side of Triton Multimodal: the bundled models' code, the launcher and the tiny test builds.

* ``engines/``: one engine per bundled model (``chat/``, embedding, rerank, multimodal, match,
  asr, tts, ocr, frames); plain Python, testable without a server.
* ``media/``: media decoding on the server (audio, images, video frames, PDF pages).
* ``checkpoints/``: reading checkpoint directories without loading them (context windows,
  Whisper and Piper layouts) and fetching one from the hub.
* ``backend/``: the python-backend adapters that ``model_repository/*/1/model.py`` share.
* ``ops/``: the launcher (``python -m tritonmm_server.launch``): planning each model's weights,
  rendering the repository, running tritonserver, the background server's state.
* ``tiny/``: tiny random-weight checkpoints: the two the product serves without a checkpoint,
  and the test-only ones, kept apart.

The architecture, with the data path, is described in ``docs/architecture.md``.
"""
