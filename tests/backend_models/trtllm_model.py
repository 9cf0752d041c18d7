"""Test fixture: TensorRT-LLM's Triton interface (NVIDIA/TensorRT-LLM triton_backend/all_models/inflight_batcher_llm).

Two roles, chosen by the ``role`` config parameter:

* ``ensemble_step``: the one step of the ``trtllm_ensemble`` fixture, standing in for
  preprocessing + tensorrt_llm + postprocessing: the ensemble's own tensors map 1:1 onto
  it. Streaming, each response is the step's new tokens decoded on their own (the
  postprocessing model decodes each response's tokens alone); the last has FINAL.
* ``bls``: the ``tensorrt_llm_bls`` model. With ``accumulate_tokens`` on, each streamed
  response is the whole text so far. Images come in ``image_url_input``; only
  ``data:image/jpeg;base64,`` URLs are decoded inline (TensorRT-LLM fetches others; this
  fixture fetches nothing). After the responses comes an empty FINAL response, and an
  error is a response of its own followed by that FINAL, as the BLS model sends them.

Both: batched tensors (``max_batch_size`` > 0, one request per batch here); ``max_tokens``
is required; ``stop_words`` end generation with the stop word in the text;
``exclude_input_in_output`` off puts the prompt in front of a non-streamed answer (the
output ids then hold the input ids); ``num_output_tokens`` counts each response's tokens;
``guided_decoding_guide_type`` ``json_schema`` (schema in ``guided_decoding_guide``) or
``json``.
"""

import base64
import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from engine_client import FINAL, config_parameter, error, generate, tensor, value, values

DATA_URL = "data:image/jpeg;base64,"


class TritonPythonModel:
    def initialize(self, args):
        self.role = config_parameter(args, "role")
        self.accumulate = config_parameter(args, "accumulate_tokens").lower() in ("true", "yes", "1", "t")

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            self._answer(request, sender)
        except Exception as exc:
            if self.role == "bls":
                sender.send(error(f"Traceback (most recent call last):\n{type(exc).__name__}: {exc}"))
                sender.send(flags=FINAL)
            else:
                sender.send(error(f"Encountered an error in forward function: {exc}"), flags=FINAL)

    def _answer(self, request, sender):
        prompt = value(request, "text_input")
        max_tokens = value(request, "max_tokens")
        if not max_tokens or max_tokens <= 0:
            raise ValueError("max_tokens must be a single value > 0")
        stream = bool(value(request, "stream", False))
        exclude = bool(value(request, "exclude_input_in_output", False))
        wants_in = bool(value(request, "return_num_input_tokens", False))
        wants_out = bool(value(request, "return_num_output_tokens", False))
        steps, total, prompt_tokens = 0, "", 0
        for step in generate(prompt, self._images(request), self._params(request, max_tokens)):
            steps += 1
            total, prompt_tokens = step["total"], step["prompt_tokens"]
            if stream:
                text = total if (self.role == "bls" and self.accumulate) else step["piece"]
                last = bool(step["finish"]) and self.role != "bls"
                outputs = self._outputs(text, prompt_tokens, 1, wants_in, wants_out)
                sender.send(pb_utils.InferenceResponse(outputs), flags=FINAL if last else 0)
        if not stream:
            text = total if exclude else prompt + total
            new_tokens = steps if exclude else steps + prompt_tokens
            outputs = self._outputs(text, prompt_tokens, new_tokens, wants_in, wants_out)
            sender.send(pb_utils.InferenceResponse(outputs), flags=0 if self.role == "bls" else FINAL)
        if self.role == "bls":
            sender.send(flags=FINAL)

    def _params(self, request, max_tokens):
        params = {"max_tokens": max_tokens, "stop_mode": "include"}
        for name in ("temperature", "top_p", "top_k", "seed"):
            if value(request, name) is not None:
                params[name] = value(request, name)
        params["stop"] = [word.decode("utf-8") for word in values(request, "stop_words")]
        guide_type = value(request, "guided_decoding_guide_type")
        if guide_type == "json_schema":
            params["json_schema"] = json.loads(value(request, "guided_decoding_guide"))
        elif guide_type == "json":
            params["json_object"] = True
        elif guide_type is not None:
            raise ValueError(f"guided_decoding_guide_type {guide_type!r} is not one this fixture takes")
        return params

    def _images(self, request):
        url = value(request, "image_url_input") if self.role == "bls" else None
        if not url:
            return []
        if not url.startswith(DATA_URL):
            raise ValueError("this fixture decodes data:image/jpeg;base64 URLs only")
        return [base64.b64decode(url[len(DATA_URL) :])]

    def _outputs(self, text, prompt_tokens, new_tokens, wants_in, wants_out):
        outputs = [tensor("text_output", [text.encode("utf-8")], np.object_, batched=True)]
        if wants_in:
            outputs.append(tensor("num_input_tokens", [prompt_tokens], np.int32, batched=True))
        if wants_out:
            outputs.append(tensor("num_output_tokens", [new_tokens], np.int32, batched=True))
        return outputs
