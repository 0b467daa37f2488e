"""Documents for screening: what the paths a reviewer gives hold, and their images one at a time.

- An image file is a document of one image.
- A PDF is one document: every embedded raster image at its native resolution (PDFium, through
  ``pypdfium2``), and with ``render_dpi`` each page rendered too, with page number and position.
- A folder is one document of the images below it, except a folder of per-paper subfolders (no
  image directly in it, subfolders that hold images): then each such subfolder is a document.
  PDFs found in a folder are documents of their own.

Listing reads headers only (image sizes from the PDF's image dictionaries, never pixels), so a
200-page PDF costs no pixel memory until ``load`` decodes one image; an image claiming more than
``MAX_PIXELS`` is an error row, never an allocation. Every file that cannot be used is an error
record ``{"file", "page", "reason"}``.

Why pypdfium2: it binds PDFium (Chrome's PDF engine, maintained, permissive licence), ships
wheels with the library inside (no system poppler or MuPDF), gives each image object's pixel
size and placement without decoding, decodes it at native resolution, and renders pages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from preprocessing import fileio
from preprocessing.errors import BadInput
from preprocessing.images import IMAGE_EXTENSIONS, MAX_PIXELS, is_image_file, read_rgb8, to_rgb8

PDF_EXTENSION = ".pdf"
# Files in a folder with these endings are pictures this tool cannot read: reported, not ignored.
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".bmp", ".webp", ".svg", ".eps", ".psd", ".jp2", ".heic", ".ai")
PDF_SIGNATURE = b"%PDF-"
# PDF's signature may follow some junk bytes (the format allows it within the first 1024).
PDF_SIGNATURE_WINDOW = 1024
POINTS_PER_INCH = 72.0


@dataclass(frozen=True)
class ImageRef:
    """Where one image of a document comes from (enough to decode it again later, in any process)."""

    source: str  # the path as given, or below the folder given
    path: str  # the file to read
    page: Optional[int] = None  # 1-based PDF page
    index: int = 0  # the image's number in its document
    obj: Optional[int] = None  # embedded image: its number among the page's image objects
    render_dpi: int = 0  # rendered page: the resolution
    position: Optional[tuple] = None  # on the page: (x, y, w, h) in points from the top left

    @property
    def label(self) -> str:
        if self.page is None:
            return self.source
        what = f"page render at {self.render_dpi} dpi" if self.render_dpi else f"image {self.obj + 1}"
        return f"{self.source}, page {self.page}, {what}"


@dataclass
class Document:
    name: str
    images: list = field(default_factory=list)  # ImageRef
    errors: list = field(default_factory=list)  # {"file", "page", "reason"}


def error(source: str, reason: str, page: Optional[int] = None) -> dict:
    return {"file": source, "page": page, "reason": reason}


def _pdfium():
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    return pdfium, raw


def _open_pdf(path: str, source: str):
    """The open PDF, or BadInput with the reason (empty, not a PDF, encrypted, damaged)."""
    pdfium, raw = _pdfium()
    with fileio.input_errors(source):  # the one place read failures become reasons
        fileio.check_regular(path)  # a FIFO named .pdf would block the open below
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(PDF_SIGNATURE_WINDOW)
    if size == 0:
        raise BadInput(source, "empty_file: zero bytes")
    if PDF_SIGNATURE not in head:
        raise BadInput(source, "not_a_pdf: no %PDF- signature at the start of the file")
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == raw.FPDF_ERR_PASSWORD or "password" in str(exc).lower():
            raise BadInput(source, "encrypted_pdf: needs a password") from exc
        raise BadInput(source, f"damaged_pdf: {exc}") from exc


def _image_objects(page, raw) -> list:
    return list(page.get_objects(filter=(raw.FPDF_PAGEOBJ_IMAGE,)))


def _position(obj, page_height: float) -> tuple:
    left, bottom, right, top = obj.get_bounds()
    return (round(left, 1), round(page_height - top, 1), round(right - left, 1), round(top - bottom, 1))


def pdf_document(path: str, source: str, render_dpi: int = 0, max_pixels: int = MAX_PIXELS) -> Document:
    """The images of one PDF, listed from their dictionaries (no pixels decoded)."""
    doc = Document(source)
    try:
        pdf = _open_pdf(path, source)
    except BadInput as exc:
        doc.errors.append(error(source, exc.reason))
        return doc
    _, raw = _pdfium()
    try:
        for p in range(len(pdf)):
            try:
                page = pdf[p]
                width, height = page.get_size()
                objects = _image_objects(page, raw)
            except Exception as exc:  # PDFium raises its own error types for broken pages
                doc.errors.append(error(source, f"damaged_pdf: page {p + 1}: {exc}", p + 1))
                continue
            for k, obj in enumerate(objects):
                w, h = obj.get_px_size()
                if w * h > max_pixels:
                    doc.errors.append(error(source, f"too_large: image {k + 1} claims {w}x{h} = {w * h} pixels, "
                                                    f"over the limit of {max_pixels}", p + 1))
                    continue
                doc.images.append(ImageRef(source, path, p + 1, len(doc.images), k,
                                           position=_position(obj, height)))
            if render_dpi:
                s = render_dpi / POINTS_PER_INCH
                if width * s * height * s > max_pixels:
                    doc.errors.append(error(source, f"too_large: page render at {render_dpi} dpi is "
                                                    f"{int(width * s)}x{int(height * s)} pixels", p + 1))
                else:
                    doc.images.append(ImageRef(source, path, p + 1, len(doc.images), render_dpi=render_dpi,
                                               position=(0.0, 0.0, round(width, 1), round(height, 1))))
    finally:
        pdf.close()
    if not doc.images and not doc.errors:
        doc.errors.append(error(source, "no_images: the PDF holds no raster image (pass --render_pages DPI "
                                        "to screen rendered pages)"))
    return doc


def load(ref: ImageRef) -> np.ndarray:
    """Decode one image (RGB uint8), or BadInput naming the file, page and reason."""
    if ref.page is None:
        return read_rgb8(ref.path)
    pdf = _open_pdf(ref.path, ref.source)
    _, raw = _pdfium()
    try:
        page = pdf[ref.page - 1]
        if ref.render_dpi:
            bitmap = page.render(scale=ref.render_dpi / POINTS_PER_INCH)
        else:
            bitmap = _image_objects(page, raw)[ref.obj].get_bitmap(render=False)
        return to_rgb8(np.array(bitmap.to_numpy(), copy=True))  # PDFium's bitmaps are BGR(x) or grey
    except BadInput:
        raise
    except Exception as exc:
        raise BadInput(ref.source, f"corrupt_image: {ref.label}: {type(exc).__name__}: {exc}") from exc
    finally:
        pdf.close()


def _images_below(folder: str) -> tuple[list[str], list[str], list[str]]:
    """(image files, PDFs, unsupported pictures) below ``folder``, sorted, hidden files skipped."""
    images, pdfs, unsupported = [], [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            ext = os.path.splitext(name)[1].lower()
            if is_image_file(name):
                images.append(full)
            elif ext == PDF_EXTENSION:
                pdfs.append(full)
            elif ext in UNSUPPORTED_IMAGE_EXTENSIONS:
                unsupported.append(full)
    return images, pdfs, unsupported


def _shown(given: str, folder: str, full: str) -> str:
    """A file's source as a reviewer reads it: below the folder as given."""
    return os.path.join(given, os.path.relpath(full, folder))


def _folder_documents(given: str, render_dpi: int) -> list[Document]:
    folder = os.path.abspath(given)
    images, pdfs, unsupported = _images_below(folder)
    per_paper = not any(os.path.dirname(p) == folder for p in images) and len(
        {os.path.relpath(p, folder).split(os.sep)[0] for p in images}) > 1
    groups: dict = {}
    for p in images:
        key = os.path.join(given, os.path.relpath(p, folder).split(os.sep)[0]) if per_paper else given
        groups.setdefault(key, []).append(p)
    docs = []
    for name, files in groups.items():
        doc = Document(name)
        for p in files:
            doc.images.append(ImageRef(_shown(given, folder, p), p, index=len(doc.images)))
        docs.append(doc)
    for p in pdfs:
        docs.append(pdf_document(p, _shown(given, folder, p), render_dpi))
    if unsupported:
        stray = Document(given)
        for p in unsupported:
            stray.errors.append(error(_shown(given, folder, p), "unsupported_format: "
                                      f"{os.path.splitext(p)[1].lower()} (readable: PDF and "
                                      f"{', '.join(IMAGE_EXTENSIONS)})"))
        docs.append(stray)
    if not docs:
        docs.append(Document(given, errors=[error(given, "no_images: no image or PDF below this folder")]))
    return docs


def documents(paths: list[str], render_dpi: int = 0) -> list[Document]:
    """The documents the given paths hold, in the order given (see the module docstring)."""
    out = []
    for given in paths:
        ext = os.path.splitext(given)[1].lower()
        if os.path.isdir(given):
            out += _folder_documents(given, render_dpi)
        elif not os.path.exists(given):
            out.append(Document(given, errors=[error(given, "not_found: no such file or folder")]))
        elif ext == PDF_EXTENSION:
            out.append(pdf_document(given, given, render_dpi))
        elif is_image_file(given):
            out.append(Document(given, images=[ImageRef(given, given)]))
        else:
            out.append(Document(given, errors=[error(given, f"unsupported_format: {ext or 'no extension'} "
                                                            f"(readable: PDF and {', '.join(IMAGE_EXTENSIONS)})")]))
    return out
