"""Core library shared by the Dify plugins and the Triton models.

No module here imports ``dify_plugin``: handlers translate Dify types at the
edge. ``contract`` is also imported by the server-side models.
"""
