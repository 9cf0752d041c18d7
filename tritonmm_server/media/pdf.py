"""PDF documents from chat requests, rendered page by page into images for a vision model.

One function, :func:`render_pdf_pages`: the file's bytes in, one RGB image per page
out, or an :class:`~tritonmm_server.backend.errors.InputError` that names the
document (``what``) and the problem. Refused, never cut short:

* a document with more pages than ``max_pages`` (``tmm.document_max_pages``): a
  user who sends a 40-page report expects an answer about the whole report, not
  about its first pages without a word;
* a document that needs a password to open (its text is encrypted). One that
  opens without a password (only its permissions are protected) is rendered;
* bytes that are not a PDF, or a PDF too damaged for PDFium to open.

Pages are rendered at ``dpi`` (``tmm.document_dpi``), white background; a page
whose image would be longer than ``max_side`` pixels (``tmm.document_max_side``)
on its longer side is rendered smaller to fit, so a poster-sized page costs no
more than a letter-sized one.

PDFium (through pypdfium2, Apache-2.0/BSD-3, wheels with no system dependencies)
is not thread-safe, not even across documents, so every call into it holds one
process-wide lock. Plain Python (no Triton imports), testable without a server.
"""

from __future__ import annotations

import threading

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
from PIL import Image

from tritonmm.contract import KEY_DOCUMENT_MAX_PAGES
from tritonmm_server.backend.errors import InputError

__all__ = ["DEFAULT_DPI", "DEFAULT_MAX_PAGES", "DEFAULT_MAX_SIDE", "render_pdf_pages"]

DEFAULT_MAX_PAGES = 8
DEFAULT_DPI = 100.0  # an A4 page is 827 x 1169 pixels: body text stays legible
DEFAULT_MAX_SIDE = 1600
POINTS_PER_INCH = 72  # PDF page sizes are in points
# PDF 1.x allows the header anywhere in the first 1024 bytes.
_HEADER_WINDOW = 1024
_PDFIUM = threading.Lock()


def render_pdf_pages(data: bytes, *, max_pages: int, dpi: float, max_side: int, what: str) -> list[Image.Image]:
    """Every page of the PDF in ``data`` as an RGB image; InputError starting with ``what`` otherwise."""
    if max_pages < 1 or dpi <= 0 or max_side < 1:
        raise ValueError("max_pages and max_side must be >= 1 and dpi > 0")
    if isinstance(data, str):
        raise InputError(f"{what}: a document must be sent as the file's bytes, not as text")
    data = bytes(data)
    if not data:
        raise InputError(f"{what}: the document is empty (0 bytes)")
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise InputError(f"{what}: not a PDF file (first bytes {data[:8]!r}); only PDF documents are read")
    with _PDFIUM:
        document = _open(data, what)
        try:
            pages = len(document)
            if pages == 0:
                raise InputError(f"{what}: the PDF has no pages")
            if pages > max_pages:
                raise InputError(
                    f"{what} has {pages} pages; this model reads at most {max_pages} pages per document "
                    f"({KEY_DOCUMENT_MAX_PAGES}): send the pages that matter as a shorter PDF"
                )
            return [_render(document, number, dpi, max_side, what) for number in range(pages)]
        finally:
            document.close()


def _open(data: bytes, what: str) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code in (pdfium_raw.FPDF_ERR_PASSWORD, pdfium_raw.FPDF_ERR_SECURITY):
            raise InputError(
                f"{what}: the PDF is protected by a password; send it without the password protection"
            ) from None
        raise InputError(f"{what}: cannot read the PDF, the file is corrupt or damaged: {exc}") from None


def _render(document: pdfium.PdfDocument, number: int, dpi: float, max_side: int, what: str) -> Image.Image:
    page = document[number]
    try:
        width, height = page.get_size()  # points, as displayed (the page's rotation applied)
        if min(width, height) <= 0:
            raise InputError(f"{what}, page {number + 1}: the page has no area ({width:g} x {height:g} points)")
        scale = min(dpi / POINTS_PER_INCH, max_side / max(width, height))
        bitmap = page.render(scale=scale)
        try:
            return bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
    except pdfium.PdfiumError as exc:
        raise InputError(f"{what}, page {number + 1}: cannot render the page ({exc})") from None
    finally:
        page.close()
