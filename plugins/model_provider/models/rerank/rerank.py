"""Rerank: Dify's query and documents in, documents sorted by relevance out."""

from __future__ import annotations

from collections.abc import Mapping

from dify_plugin import RerankModel
from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ModelType
from dify_plugin.entities.model.rerank import RerankDocument, RerankResult
from models.common import TritonModelMixin, customizable_schema

from tritonmm import rerank
from tritonmm.contract import Task


class TritonMultimodalRerankModel(TritonModelMixin, RerankModel):
    TASK = Task.RERANK
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
        ranked = rerank.rerank(self.settings(credentials), model, caps, query, list(docs), score_threshold=score_threshold, top_n=top_n)
        return RerankResult(model=model, docs=[RerankDocument(index=r.index, text=r.text, score=r.score) for r in ranked])

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        caps = self.capabilities(model, credentials)
        return customizable_schema(model, ModelType.RERANK, caps, {ModelPropertyKey.CONTEXT_SIZE: caps.context_size})
