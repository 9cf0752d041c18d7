from collections.abc import Generator
from io import BytesIO
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage
from PIL import Image, ImageDraw
from tools import support

from tritonmm import vision_tools
from tritonmm.images import to_rgb
from tritonmm.media import Modality


class OcrTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        credentials = self.runtime.credentials
        model = support.text(tool_parameters, "model", "ocr")
        draw = support.truthy(tool_parameters, "draw_boxes")
        images = support.files(tool_parameters, "images")
        server = support.client(credentials)
        results = []
        for number, file in enumerate(images, start=1):
            data = support.download(credentials, file, Modality.IMAGE, f"image {number}")
            result = vision_tools.read_text(server, model, data)
            lines = [{"text": line.text, "score": round(line.score, 4), "box": line.box} for line in result.lines]
            results.append({"image": file.filename or f"image {number}", "text": result.text, "lines": lines})
            if draw:
                name = f"{(file.filename or f'image_{number}').rsplit('.', 1)[0]}_ocr.png"
                yield self.create_blob_message(
                    boxes_drawn(data, result), meta={"mime_type": "image/png", "filename": name}
                )
        text = "\n\n".join(r["text"] for r in results)
        yield self.create_text_message(text)
        yield self.create_json_message({"images": results})
        yield self.create_variable_message("text", text)


def boxes_drawn(image: bytes, result: vision_tools.OcrResult) -> bytes:
    """The image with each line's box outlined: where the text was read."""
    with Image.open(BytesIO(image)) as opened:
        canvas = to_rgb(opened)
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    for line in result.lines:
        pen.polygon([tuple(point) for point in line.box], outline=(230, 30, 30), width=width)
    out = BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
