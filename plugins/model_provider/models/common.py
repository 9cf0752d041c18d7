"""What every model handler of this provider shares: error mapping, settings, checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dify_plugin.errors.model import (
    CredentialsValidateFailedError,
    InvokeAuthorizationError,
    InvokeBadRequestError,
    InvokeConnectionError,
    InvokeError,
    InvokeServerUnavailableError,
)

from tritonmm import errors
from tritonmm.contract import Capabilities
from tritonmm.diagnose import check_model
from tritonmm.settings import ServerSettings

# Each leaf of tritonmm.errors lands in exactly one bucket (tests check it).
ERROR_MAPPING: dict[type[InvokeError], list[type[Exception]]] = {
    InvokeConnectionError: [errors.ConnectionFailed],
    InvokeServerUnavailableError: [errors.Unavailable, errors.ServerError, errors.Cancelled],
    InvokeBadRequestError: [errors.InvalidInput, errors.ModelNotFound],
    InvokeAuthorizationError: [errors.Unauthorized],
}


class TritonModelMixin:
    """Mixed into each Dify model class (LargeLanguageModel, ...) of this plugin."""

    @property
    def _invoke_error_mapping(self) -> dict[type[InvokeError], list[type[Exception]]]:
        return ERROR_MAPPING

    @staticmethod
    def settings(credentials: Mapping[str, Any]) -> ServerSettings:
        return ServerSettings.from_credentials(credentials)

    def check_credentials(
        self, model: str, credentials: Mapping[str, Any], probe: Callable[[ServerSettings, str, Capabilities], None]
    ) -> Capabilities:
        """Walk the validation steps; the error says which step failed and why."""
        try:
            settings = self.settings(credentials)
            return check_model(settings, model, lambda caps: probe(settings, model, caps))
        except errors.TritonMMError as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc
