from typing import Any

from dify_plugin import ToolProvider
from dify_plugin.errors.tool import ToolProviderCredentialValidationError
from tools import support

from tritonmm.diagnose import check_server
from tritonmm.errors import TritonMMError


class TritonMultimodalToolsProvider(ToolProvider):
    def _validate_credentials(self, credentials: dict[str, Any]) -> None:
        """Reach the server and see it ready; the message names the failing step."""
        try:
            check_server(support.client(credentials))
        except TritonMMError as exc:
            raise ToolProviderCredentialValidationError(str(exc)) from exc
