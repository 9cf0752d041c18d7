"""PDF documents rendered page by page into images (pypdfium2), and the documents refused."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from tritonmm_server.backend.errors import InputError
from tritonmm_server.media.pdf import render_pdf_pages

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
LETTER = (612, 792)  # points


def pdf(
    colors: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE), size: tuple[int, int] = LETTER, dpi: float = 72.0
) -> bytes:
    """A PDF with one page per colour, each filled with it; ``size`` pixels at ``dpi`` make the page size."""
    pages = [Image.new("RGB", size, color) for color in colors]
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", save_all=True, append_images=pages[1:], resolution=dpi)
    return buf.getvalue()


def rewritten(data: bytes, edit) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    edit(writer)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def render(data: bytes, *, max_pages: int = 8, dpi: float = 72, max_side: int = 4000) -> list[Image.Image]:
    return render_pdf_pages(data, max_pages=max_pages, dpi=dpi, max_side=max_side, what="document 1")


def dominant(image: Image.Image) -> tuple[int, int, int]:
    return max(image.getcolors(image.width * image.height))[1]


def near(color: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 2 for a, b in zip(color, expected, strict=True))  # PDFium rounds colours slightly


def test_a_three_page_pdf_gives_three_images_in_page_order_at_the_dpi() -> None:
    pages = render(pdf(), dpi=72)
    assert [p.size for p in pages] == [LETTER] * 3
    assert all(p.mode == "RGB" for p in pages)
    for page, color in zip(pages, (RED, GREEN, BLUE), strict=True):
        assert near(dominant(page), color)
    assert [p.size for p in render(pdf(), dpi=144)] == [(1224, 1584)] * 3


def test_a_huge_page_is_rendered_to_fit_max_side_keeping_its_shape() -> None:
    poster = pdf((RED,), size=(200, 100), dpi=1.0)  # 14400 x 7200 points: 200 x 100 inches
    (page,) = render(poster, dpi=100, max_side=1000)
    assert page.size == (1000, 500)
    assert near(dominant(page), RED)


def test_a_rotated_page_is_rendered_as_displayed() -> None:
    (page,) = render(rewritten(pdf((GREEN,)), lambda w: w.pages[0].rotate(90)))
    assert page.size == (LETTER[1], LETTER[0])


def test_pages_up_to_the_cap_are_read_and_one_more_is_refused_with_the_counts() -> None:
    assert len(render(pdf(), max_pages=3)) == 3
    with pytest.raises(InputError) as caught:
        render(pdf(), max_pages=2)
    assert str(caught.value) == (
        "document 1 has 3 pages; this model reads at most 2 pages per document (tmm.document_max_pages): "
        "send the pages that matter as a shorter PDF"
    )


@pytest.mark.parametrize("algorithm", ["AES-256", "RC4-128"])
def test_a_password_protected_pdf_is_refused(algorithm: str) -> None:
    locked = rewritten(pdf(), lambda w: w.encrypt(user_password="secret", owner_password="owner", algorithm=algorithm))
    with pytest.raises(InputError) as caught:
        render(locked)
    assert (
        str(caught.value) == "document 1: the PDF is protected by a password; send it without the password protection"
    )


def test_a_pdf_that_opens_without_a_password_is_read_even_with_protected_permissions() -> None:
    restricted = rewritten(pdf(), lambda w: w.encrypt(user_password="", owner_password="owner", algorithm="AES-256"))
    pages = render(restricted)
    assert len(pages) == 3 and near(dominant(pages[2]), BLUE)


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.7\n" + os.urandom(4000), pdf()[: len(pdf()) // 2]],
    ids=["garbage after the header", "cut in half"],
)
def test_a_corrupt_pdf_is_refused(data: bytes) -> None:
    with pytest.raises(
        InputError, match=r"^document 1: cannot read the PDF, the file is corrupt or damaged: .*Data format error"
    ):
        render(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "document 1: the document is empty (0 bytes)"),
        (
            b"\x89PNG\r\n\x1a\n" + bytes(100),
            "document 1: not a PDF file (first bytes b'\\x89PNG\\r\\n\\x1a\\n'); only PDF documents are read",
        ),
        ("%PDF-1.7", "document 1: a document must be sent as the file's bytes, not as text"),
    ],
    ids=["empty", "a PNG", "text"],
)
def test_what_is_not_a_pdf_is_refused_naming_it(data: bytes, message: str) -> None:
    with pytest.raises(InputError) as caught:
        render(data)
    assert str(caught.value) == message
