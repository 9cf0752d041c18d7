"""Test fixture: a decoupled LLM of someone else's design, reached through the generate endpoint.

Its tensors are named ``prompt`` (STRING) and ``max_new_tokens`` (INT32, optional) in,
``completion`` (STRING) out: neither the vLLM backend's nor TensorRT-LLM's names, so a
client has to be told them. It streams the new text of each step, the last response with
FINAL. Knob (config parameter): ``fail_after``, fail after that many responses, so that
the generate endpoint sends an ``{"error": ...}`` event after its 200.
"""

import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from engine_client import FINAL, config_parameter, error, generate, tensor, value


class TritonPythonModel:
    def initialize(self, args):
        self.fail_after = int(config_parameter(args, "fail_after", "0") or 0)

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            params = {"max_tokens": value(request, "max_new_tokens", 16), "temperature": 0.0}
            for sent, step in enumerate(generate(value(request, "prompt"), [], params), start=1):
                if self.fail_after and sent > self.fail_after:
                    raise RuntimeError("generation failed half way")
                response = pb_utils.InferenceResponse([tensor("completion", [step["delta"].encode()], np.object_)])
                sender.send(response, flags=FINAL if step["finish"] else 0)
        except Exception as exc:
            sender.send(error(str(exc)), flags=FINAL)
