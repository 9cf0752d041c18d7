from dify_plugin import ModelProvider
from dify_plugin.entities.model import ModelType
from dify_plugin.errors.model import CredentialsValidateFailedError
from models.llm.llm import BUNDLED_MODEL

from tritonmm.routing import chat_features


class TritonMultimodalProvider(ModelProvider):
    def validate_provider_credentials(self, credentials: dict) -> None:
        """Check the bundled model end to end, and that it has what its YAML promises.

        Dify filters media by the features in the predefined YAML, so a server
        whose `chat` model lacks one would otherwise fail only at chat time.
        """
        llm = self.get_model_instance(ModelType.LLM)
        caps = llm.check_credentials(BUNDLED_MODEL, credentials)
        schema = llm.predefined_schema(BUNDLED_MODEL)
        promised = {f.value for f in (schema.features or [])} if schema else set()
        missing = promised - {f.value for f in chat_features(llm.client(credentials), caps)}
        if missing:
            raise CredentialsValidateFailedError(
                f"the server's '{BUNDLED_MODEL}' model does not take {', '.join(sorted(missing))} "
                "(tmm.features in its config.pbtxt; audio also by tmm.asr_model naming a loaded "
                "speech_to_text model); add it as a customizable model instead"
            )
