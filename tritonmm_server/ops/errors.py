"""What the launcher and the tritonserver runner raise, each worded for the user."""


class LaunchError(RuntimeError):
    """A problem with the launcher's inputs or environment, worded for the user."""


class TritonServerError(RuntimeError):
    """Base class of everything this module raises."""


class ServerNotInstalled(TritonServerError):
    """The tritonserver binary, its python-backend stub or numpy is missing."""


class PortInUse(TritonServerError):
    """A requested port is taken by another process."""


class ServerExited(TritonServerError):
    """The server process ended while we waited for it."""


class ServerStartTimeout(TritonServerError):
    """The server or a model did not become ready in time."""


class ModelLoadError(TritonServerError):
    """A model ended UNAVAILABLE; ``reason`` is Triton's text (usually the traceback)."""

    def __init__(self, message: str, model: str, reason: str) -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason
