"""Server-side code of the bundled Triton models (runs inside the python-backend stub)."""
