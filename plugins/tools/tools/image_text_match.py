from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage
from tools import support

from tritonmm import vision_tools
from tritonmm.media import Modality


def labels_of(raw: Any) -> list[str]:
    """Labels as a list, or one per line, or comma separated when on one line."""
    if isinstance(raw, list):
        return [str(item) for item in raw]
    value = str(raw or "")
    return value.splitlines() if "\n" in value else value.split(",")


class ImageTextMatchTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        credentials = self.runtime.credentials
        [file] = support.files(tool_parameters, "image")[:1]
        image = support.download(credentials, file, Modality.IMAGE, "the image")
        model = support.text(tool_parameters, "model", "image_text_match")
        result = vision_tools.match(support.client(credentials), model, image, labels_of(tool_parameters.get("texts")))
        ranked = sorted(
            (
                {"label": label, "score": round(score, 6), "similarity": round(similarity, 6)}
                for label, score, similarity in zip(result.labels, result.scores, result.similarities, strict=True)
            ),
            key=lambda entry: -entry["score"],
        )
        best = ranked[0]
        yield self.create_text_message(f"{best['label']} ({best['score']:.1%})")
        yield self.create_json_message({"best": best["label"], "scores": ranked})
        yield self.create_variable_message("best_label", best["label"])
        yield self.create_variable_message("best_score", best["score"])
        yield self.create_blob_message(result.heatmap_png, meta={"mime_type": "image/png", "filename": "heatmap.png"})
