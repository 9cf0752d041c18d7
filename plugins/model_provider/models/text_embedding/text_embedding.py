"""Text embeddings: Dify's texts in, the model's vectors out, in input order."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from dify_plugin import TextEmbeddingModel
from dify_plugin.entities.model import AIModelEntity, EmbeddingInputType, ModelPropertyKey, ModelType, PriceType
from dify_plugin.entities.model.text_embedding import (
    EmbeddingUsage,
    MultiModalContent,
    MultiModalEmbeddingResult,
    TextEmbeddingResult,
)
from models.common import TritonModelMixin, customizable_schema

from tritonmm import embedding
from tritonmm.batching import DEFAULT_BATCH
from tritonmm.contract import Task
from tritonmm.errors import InvalidInput, TritonMMError

# The daemon reads each plugin message as one stdout line and kills the plugin
# past 5 MiB (PLUGIN_RUNTIME_MAX_BUFFER_SIZE); keep room for the envelope.
MESSAGE_BUDGET = 5 * 1024 * 1024 - 64 * 1024


def fit_one_message(vectors: list[list[float]]) -> list[list[float]]:
    """Vectors at float32 precision (7 significant digits: half the JSON of a
    float64 repr, nothing lost), refused by name if still too big for one line."""
    rounded = [[float(f"{x:.7g}") for x in vector] for vector in vectors]
    size = len(json.dumps(rounded))
    if size > MESSAGE_BUDGET:
        per_text = size / len(rounded)
        raise InvalidInput(
            f"{len(rounded)} embeddings make a {size / 2**20:.1f} MiB answer, above the Dify daemon's 5 MiB "
            f"message limit; send at most {int(MESSAGE_BUDGET / per_text)} texts per call"
        )
    return rounded


class TritonMultimodalTextEmbeddingModel(TritonModelMixin, TextEmbeddingModel):
    TASK = Task.TEXT_EMBEDDING
    ALSO_ACCEPTS = (Task.MULTIMODAL_EMBEDDING,)  # CLIP-family models embed plain texts too
    PROBE = staticmethod(embedding.probe)

    def _invoke(
        self,
        model: str,
        credentials: dict,
        texts: list[str],
        user: str | None = None,
        input_type: EmbeddingInputType = EmbeddingInputType.DOCUMENT,
    ) -> TextEmbeddingResult:
        result = self._embed(model, credentials, texts, input_type.value)
        vectors = fit_one_message(result.vectors)
        usage = self._usage(model, credentials, sum(result.tokens))
        return TextEmbeddingResult(model=model, embeddings=vectors, usage=usage)

    def _invoke_multimodal(
        self,
        model: str,
        credentials: dict,
        documents: list[MultiModalContent],
        user: str | None = None,
        input_type: EmbeddingInputType = EmbeddingInputType.DOCUMENT,
    ) -> MultiModalEmbeddingResult:
        """Texts and images (raw base64) into one vector space, in input order."""
        client = self.client(credentials)
        caps = self.capabilities(model, credentials)
        items = [
            embedding.content_item(d.content_type.value, d.content, f"document {i + 1}", client)
            for i, d in enumerate(documents)
        ]
        result = embedding.embed_contents(client, model, caps, items)
        vectors = fit_one_message(result.vectors)
        usage = self._usage(model, credentials, sum(result.tokens))
        return MultiModalEmbeddingResult(model=model, embeddings=vectors, usage=usage)

    def get_num_tokens(self, model: str, credentials: dict, texts: list[str]) -> list[int]:
        """Counted by the model's own tokenizer on the server."""
        try:
            return self._embed(model, credentials, texts, EmbeddingInputType.DOCUMENT.value).tokens
        except TritonMMError as exc:  # not mapped by the SDK on this path
            raise self._transform_invoke_error(exc) from exc

    def _embed(self, model: str, credentials: Mapping, texts: list[str], input_type: str) -> embedding.Embeddings:
        caps = self.capabilities(model, credentials)
        return embedding.embed_texts(self.client(credentials), model, caps, list(texts), input_type)

    def _usage(self, model: str, credentials: dict, tokens: int) -> EmbeddingUsage:
        price = self.get_price(model=model, credentials=credentials, price_type=PriceType.INPUT, tokens=tokens)
        return EmbeddingUsage(
            tokens=tokens,
            total_tokens=tokens,
            unit_price=price.unit_price,
            price_unit=price.unit,
            total_price=price.total_amount,
            currency=price.currency,
            latency=time.perf_counter() - self.started_at,
        )

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        caps = self.capabilities(model, credentials)
        properties = {
            ModelPropertyKey.CONTEXT_SIZE: caps.context_size,
            ModelPropertyKey.MAX_CHUNKS: caps.max_batch_size or DEFAULT_BATCH,
        }
        return customizable_schema(model, ModelType.TEXT_EMBEDDING, caps, properties)
