"""Rerank: Dify's query and documents in, documents sorted by relevance out."""

from __future__ import annotations

from collections.abc import Mapping

from dify_plugin import RerankModel
from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ModelType
from dify_plugin.entities.model.rerank import MultiModalRerankResult, RerankDocument, RerankResult
from dify_plugin.entities.model.text_embedding import MultiModalContent
from models.common import TritonModelMixin, customizable_schema

from tritonmm import embedding, rerank
from tritonmm.contract import Task


class TritonMultimodalRerankModel(TritonModelMixin, RerankModel):
    TASK = Task.RERANK
    ALSO_ACCEPTS = (Task.MULTIMODAL_EMBEDDING,)  # ranks by embedding cosine: how images are ranked
    PROBE = staticmethod(rerank.probe)

    def _invoke(
        self,
        model: str,
        credentials: dict,
        query: str,
        docs: list[str],
        score_threshold: float | None = None,
        top_n: int | None = None,
        user: str | None = None,
    ) -> RerankResult:
        caps = self.capabilities(model, credentials)
        ranked = rerank.rerank(
            self.client(credentials), model, caps, query, list(docs), score_threshold=score_threshold, top_n=top_n
        )
        return RerankResult(model=model, docs=_documents(ranked))

    def _invoke_multimodal(
        self,
        model: str,
        credentials: dict,
        query: MultiModalContent,
        docs: list[MultiModalContent],
        score_threshold: float | None = None,
        top_n: int | None = None,
        user: str | None = None,
    ) -> MultiModalRerankResult:
        """An image or text query against image or text documents, through a CLIP-family model."""
        client = self.client(credentials)
        caps = self.capabilities(model, credentials)
        query_item = embedding.content_item(query.content_type.value, query.content, "the query", client)
        items = [
            embedding.content_item(d.content_type.value, d.content, f"document {i + 1}", client)
            for i, d in enumerate(docs)
        ]
        texts = [d.content for d in docs]
        ranked = rerank.rerank_contents(client, model, caps, query_item, items, texts, score_threshold, top_n)
        return MultiModalRerankResult(model=model, docs=_documents(ranked))

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        caps = self.capabilities(model, credentials)
        return customizable_schema(model, ModelType.RERANK, caps, {ModelPropertyKey.CONTEXT_SIZE: caps.context_size})


def _documents(ranked: list[rerank.Ranked]) -> list[RerankDocument]:
    return [RerankDocument(index=r.index, text=r.text, score=r.score) for r in ranked]
