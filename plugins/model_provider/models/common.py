"""What every model handler of this provider shares: error mapping, the server client, checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from dify_plugin.entities import I18nObject
from dify_plugin.entities.model import AIModelEntity, FetchFrom, ModelFeature, ModelType
from dify_plugin.errors.model import (
    CredentialsValidateFailedError,
    InvokeAuthorizationError,
    InvokeBadRequestError,
    InvokeConnectionError,
    InvokeError,
    InvokeServerUnavailableError,
)

from tritonmm import errors
from tritonmm.contract import Capabilities, Feature, Task
from tritonmm.diagnose import check_model
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient, client_for

# Each leaf of tritonmm.errors lands in exactly one bucket (tests check it).
ERROR_MAPPING: dict[type[InvokeError], list[type[Exception]]] = {
    InvokeConnectionError: [errors.ConnectionFailed],
    InvokeServerUnavailableError: [errors.Unavailable, errors.ServerError, errors.Cancelled],
    InvokeBadRequestError: [errors.InvalidInput, errors.ModelNotFound],
    InvokeAuthorizationError: [errors.Unauthorized],
}


def customizable_schema(
    model: str,
    model_type: ModelType,
    caps: Capabilities,
    properties: dict,
    parameter_rules: list | None = None,
    features: frozenset[Feature] | None = None,
) -> AIModelEntity:
    """A customizable model's schema: features from the model's Triton config (or as given)."""
    declared = caps.features if features is None else features
    return AIModelEntity(
        model=model,
        label=I18nObject(en_US=model),
        model_type=model_type,
        features=[ModelFeature(f.value) for f in sorted(declared, key=lambda f: f.value)],
        fetch_from=FetchFrom.CUSTOMIZABLE_MODEL,
        model_properties=properties,
        parameter_rules=parameter_rules or [],
    )


class TritonModelMixin:
    """Mixed into each Dify model class (LargeLanguageModel, ...) of this plugin.

    Subclasses name the Triton task they serve (and any other task whose models
    they also accept) and the one-request probe that proves such a model
    answers; validation and capability lookups follow.
    """

    TASK: ClassVar[Task]
    ALSO_ACCEPTS: ClassVar[tuple[Task, ...]] = ()
    PROBE: ClassVar[Callable[[TritonClient, str, Capabilities], None]]

    @classmethod
    def tasks(cls) -> tuple[Task, ...]:
        return (cls.TASK, *cls.ALSO_ACCEPTS)

    @property
    def _invoke_error_mapping(self) -> dict[type[InvokeError], list[type[Exception]]]:
        return ERROR_MAPPING

    def _transform_invoke_error(self, error: Exception) -> InvokeError:
        """Keep an already-mapped error as it is: the SDK would re-wrap it into a
        bare InvokeError, losing the class name Dify maps on."""
        if isinstance(error, InvokeError):
            return error
        return super()._transform_invoke_error(error)  # type: ignore[misc]

    @staticmethod
    def client(credentials: Mapping[str, Any]) -> TritonClient:
        """The server these credentials name, through its one shared client: the only way a
        handler reaches Triton."""
        return client_for(ServerSettings.from_credentials(credentials))

    def capabilities(self, model: str, credentials: Mapping[str, Any]) -> Capabilities:
        """The model's capabilities, refused by name if it serves another task.

        Also reached outside ``_invoke`` (schemas, the SDK's parameter filtering),
        where the SDK maps nothing: map here.
        """
        try:
            return self.client(credentials).capabilities(model, self.tasks())
        except errors.TritonMMError as exc:
            raise self._transform_invoke_error(exc) from exc

    def check_credentials(self, model: str, credentials: Mapping[str, Any]) -> Capabilities:
        """Walk the validation steps; the error says which step failed and why."""
        probe = type(self).PROBE
        try:
            client = self.client(credentials)
            return check_model(client, model, self.tasks(), lambda caps: probe(client, model, caps))
        except errors.TritonMMError as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc

    def validate_credentials(self, model: str, credentials: Mapping) -> None:
        self.check_credentials(model, credentials)
