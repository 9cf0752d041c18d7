"""Running the server in a container: the image's entrypoint and what it reads from the environment.

The recipes beside this package (``Dockerfile``, ``compose.yaml``, ``k8s/``) start
``python -m deploy.entrypoint``.
"""
