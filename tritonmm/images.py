"""Image helpers shared by the plugin (tritonmm.media) and the server models.

PIL only: the Triton python stub imports this without the plugin's HTTP stack.
"""

from __future__ import annotations

from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white, not black: dark text on a
    transparent background (logos, screenshots) would otherwise vanish, and
    models and JPEG both take RGB only."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")
