"""Test fixture model ``tiny_llm_engine``: the generation behind the interface fixtures.

The vLLM, TensorRT-LLM and generate-endpoint fixtures call this model (BLS, decoupled)
so that their text is real generation by the tiny chat checkpoint (one copy of torch
and the weights for all of them). It takes a prompt string that is already a chat
template's output (and image files when the prompt has the checkpoint's image
placeholder), tokenizes it with the checkpoint's processor and streams one response per
generated token:

* ``DELTA``: the new text (the whole decoded answer minus what was sent before);
* ``PIECE``: this token decoded alone (what TensorRT-LLM's ensemble postprocessing sends);
* ``TOTAL``: the whole answer so far;
* ``PROMPT_TOKENS`` and ``FINISH`` ("stop" or "length") on the last response.

``PARAMS_JSON``: ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``
(strings), ``stop_mode`` ("exclude": the stop string is not sent, as vLLM does;
"include": it is, as TensorRT-LLM's stop words do) and ``json_schema`` / ``json_object``
(grammar-constrained decoding, as the backends' guided decoding does). Requests run one
at a time: the global RNG makes a seed reproducible.
"""

import io
import json
import queue
import threading

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from PIL import Image
from transformers import AutoModelForMultimodalLM, AutoProcessor, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from tritonmm.structured_output import parse_response_format
from tritonmm_server.engines.chat.constrained import ConstraintLogitsProcessor, StructuredOutput

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_DONE = object()


class _Tokens(BaseStreamer):
    """Hands each generated token id to the request thread; the prompt (first put) is skipped."""

    def __init__(self):
        self.queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.queue.put(token)

    def end(self):
        self.queue.put(_DONE)


class _Stop(StoppingCriteria):
    def __init__(self):
        self.now = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.now.is_set(), dtype=torch.bool)


def _tensor(name, value, dtype):
    return pb_utils.Tensor(name, np.array([value], dtype=dtype))


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        checkpoint = config["parameters"]["checkpoint"]["string_value"]
        self.processor = AutoProcessor.from_pretrained(checkpoint)
        self.tokenizer = self.processor.tokenizer
        self.model = AutoModelForMultimodalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos.discard(None)
        self.structured = StructuredOutput(self.tokenizer, eos_token_ids=self.eos, vocab_size=self.model.vocab_size)
        self.lock = threading.Lock()

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            with self.lock:
                self._generate(request, sender)
        except Exception as exc:  # every failure ends the stream with FINAL
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"engine: {exc}")), flags=FINAL)

    def _generate(self, request, sender):
        prompt = _input(request, "PROMPT")[0].decode("utf-8")
        blobs = _input(request, "IMAGES")
        raw_params = _input(request, "PARAMS_JSON")
        params = json.loads(raw_params[0]) if raw_params is not None else {}
        images = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs] if blobs is not None else None
        inputs = self.processor(text=prompt, images=images or None, return_tensors="pt", add_special_tokens=False)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        max_tokens = int(params.get("max_tokens") or 16)
        stops = [s for s in params.get("stop") or [] if s]
        include_stop = params.get("stop_mode") == "include"
        processors = []
        form = self._format(params)
        if form is not None:
            processors.append(ConstraintLogitsProcessor(self.structured.constraint(form), prompt_tokens))
        temperature = float(params.get("temperature") if params.get("temperature") is not None else 1.0)
        sampling = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling.update(temperature=temperature, top_p=float(params.get("top_p") or 1.0))
            sampling["top_k"] = int(params.get("top_k") or 0) or None
        if params.get("seed") is not None:
            torch.manual_seed(int(params["seed"]))
        streamer, stop = _Tokens(), _Stop()
        worker = threading.Thread(
            target=self._run,
            args=(inputs, max_tokens, sampling, processors, streamer, stop),
            daemon=True,
        )
        worker.start()
        ids, sent, total, finish = [], "", "", "length"
        while True:
            token = streamer.queue.get()
            if token is _DONE:
                break
            if isinstance(token, Exception):
                raise token
            if token in self.eos:
                finish = "stop"
                continue
            ids.append(token)
            total = self.tokenizer.decode(ids, skip_special_tokens=True)
            piece = self.tokenizer.decode([token], skip_special_tokens=True)
            hit = next((s for s in stops if s in total), None)
            if hit is not None:
                total = total[: total.index(hit) + (len(hit) if include_stop else 0)]
                finish = "stop"
                stop.now.set()
            if sender.is_cancelled():
                stop.now.set()
                break
            last = hit is not None or len(ids) >= max_tokens
            # As vLLM's detokenizer does: a character whose bytes are not all there yet (U+FFFD at
            # the end) and the start of a possible stop string wait for the next token.
            visible = total if last else total.rstrip("\ufffd")
            if not last and not include_stop:
                visible = visible[: len(visible) - _held(visible, stops)]
            delta = visible[len(sent) :] if len(visible) > len(sent) else ""
            sent += delta
            self._send(sender, delta, piece, total, prompt_tokens, finish if last else "")
            if last:
                worker.join()
                return
        worker.join()
        self._send(sender, total[len(sent) :] if total.startswith(sent) else "", "", total, prompt_tokens, finish)

    def _send(self, sender, delta, piece, total, prompt_tokens, finish):
        outputs = [
            _tensor("DELTA", delta.encode(), np.object_),
            _tensor("PIECE", piece.encode(), np.object_),
            _tensor("TOTAL", total.encode(), np.object_),
            _tensor("PROMPT_TOKENS", prompt_tokens, np.int32),
            _tensor("FINISH", finish.encode(), np.object_),
        ]
        sender.send(pb_utils.InferenceResponse(outputs), flags=FINAL if finish else 0)

    def _format(self, params):
        if params.get("json_schema") is not None:
            return parse_response_format("json_schema", params["json_schema"])
        if params.get("json_object"):
            return parse_response_format("json_object", None)
        return None

    def _run(self, inputs, max_tokens, sampling, processors, streamer, stop):
        try:
            with torch.inference_mode():
                self.model.generate(
                    **inputs,
                    max_new_tokens=max_tokens,
                    streamer=streamer,
                    logits_processor=processors,
                    stopping_criteria=StoppingCriteriaList([stop]),
                    pad_token_id=min(self.eos),
                    **sampling,
                )
        except Exception as exc:
            streamer.queue.put(exc)
            streamer.queue.put(_DONE)


def _held(text, stops):
    """How much of the end of ``text`` may be the start of a stop string."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                held = max(held, size)
                break
    return held
