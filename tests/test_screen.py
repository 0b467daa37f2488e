"""Screening (``python -m serving.screen``): real PDFs and images written here, the real command.

Figures are white pages with photo panels cut from the scikit-image photographs the synthetic
generator uses; PDFs are written with Pillow (one JPEG image per page) or by hand where a
broken or encrypted file is the point.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from preprocessing.synth import base as synth_base
from serving import screen

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUTTER = 24


def photo(name: str, y: int, x: int, h: int = 200, w: int = 220) -> np.ndarray:
    img = synth_base._science_image(name)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def figure(*panels: np.ndarray) -> np.ndarray:
    """Panels in a row on a white page with gutters."""
    h = max(p.shape[0] for p in panels) + 2 * GUTTER
    w = sum(p.shape[1] for p in panels) + GUTTER * (len(panels) + 1)
    page = np.full((h, w, 3), 255, np.uint8)
    x = GUTTER
    for p in panels:
        page[GUTTER:GUTTER + p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + GUTTER
    return page


def write_pdf(path, figures) -> None:
    pages = [Image.fromarray(f) for f in figures]
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=100, quality=92)


def run(tmp_path, *paths, extra=()) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "serving.screen", *map(str, paths), "--output", str(out),
                           "--workers", "1", *extra], capture_output=True, text=True, env=env, timeout=300)
    return proc, {"dir": out, "findings": _jsonl(out / "findings.jsonl"), "errors": _jsonl(out / "errors.jsonl")}


def _jsonl(path) -> list:
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


@pytest.fixture(scope="module")
def panels():
    return {"a": photo("immunohistochemistry", 0, 0), "b": photo("hubble_deep_field", 300, 400),
            "c": photo("retina", 500, 600), "d": photo("immunohistochemistry", 300, 280)}


def test_reused_mirrored_panel_across_pages_is_one_across_finding(tmp_path, panels):
    pdf = tmp_path / "paper.pdf"
    write_pdf(pdf, [figure(panels["a"], panels["b"]), figure(panels["c"], np.ascontiguousarray(panels["a"][:, ::-1]))])
    proc, out = run(tmp_path, pdf)
    assert proc.returncode == 0, proc.stderr
    across = [f for f in out["findings"] if f["kind"] == "across"]
    assert len(across) == 1, out["findings"]
    f = across[0]
    assert {f["a"]["page"], f["b"]["page"]} == {1, 2}
    assert "mirrored left-right" in f["transform"]
    assert all(s["source"] == str(pdf) for s in (f["a"], f["b"]))
    assert not [x for x in out["findings"] if x["kind"] == "within"]
    assert out["errors"] == []
    _check_html(out["dir"], out["findings"])


def test_within_figure_copy_is_a_within_finding_and_authentic_folder_gives_none(tmp_path, panels):
    forged = figure(panels["a"], panels["b"])
    y, x = GUTTER + 30, GUTTER + 40
    patch = forged[y:y + 60, x:x + 70].copy()
    xb = GUTTER + 220 + GUTTER + 90
    forged[y + 80:y + 140, xb:xb + 70] = patch
    paper = tmp_path / "paper"
    (paper / "figs").mkdir(parents=True)
    cv2.imwrite(str(paper / "figs" / "fig1.png"), forged[:, :, ::-1])
    proc, out = run(tmp_path, paper / "figs")
    assert proc.returncode == 0, proc.stderr
    kinds = [f["kind"] for f in out["findings"]]
    assert kinds == ["within"], out["findings"]
    assert out["findings"][0]["a"]["source"] == os.path.join(str(paper / "figs"), "fig1.png")

    authentic = tmp_path / "authentic"
    authentic.mkdir()
    for k, pair in enumerate((("a", "b"), ("c", "d"))):
        cv2.imwrite(str(authentic / f"fig{k}.png"), figure(*(panels[p] for p in pair))[:, :, ::-1])
    proc, out = run(tmp_path / "second", authentic)
    assert proc.returncode == 0, proc.stderr
    assert out["findings"] == [] and out["errors"] == []


# ----------------------------------------------------------------------------- bad PDFs written by hand


def _pdf(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    """A PDF file from numbered object bodies (1-based), with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer_extra, xref)
    return bytes(out)


def _page_with_image(width: int, height: int, data: bytes) -> list[bytes]:
    content = b"q 100 0 0 100 0 0 cm /Im1 Do Q"
    return [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] /Resources << /XObject << /Im1 5 0 R >> >> "
            b"/Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8 "
            b"/Filter /FlateDecode /Length %d >>\nstream\n" % (width, height, len(data)) + data + b"\nendstream"]


def _blank_page() -> list[bytes]:
    """Catalog, pages, one page without resources, its empty content stream."""
    objects = _page_with_image(1, 1, b"")[:3] + [b"<< /Length 0 >>\nstream\n\nendstream"]
    objects[2] = objects[2].replace(b"/Resources << /XObject << /Im1 5 0 R >> >> ", b"")
    return objects


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j, out = list(range(256)), 0, bytearray()
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def encrypted_pdf() -> bytes:
    """The standard security handler, revision 2 (40-bit RC4), user password "secret" (PDF 1.7,
    7.6.3.3-4): PDFium asks for the password."""
    owner = _rc4(hashlib.md5(b"owner" + PAD[:27]).digest()[:5], b"secret" + PAD[:26])
    doc_id = b"0123456789abcdef"
    perms = struct.pack("<i", -4)
    key = hashlib.md5(b"secret" + PAD[:26] + owner + perms + doc_id).digest()[:5]
    user = _rc4(key, PAD)
    enc = (b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (owner.hex().encode(), user.hex().encode()))
    ids = doc_id.hex().encode()
    return _pdf(_blank_page() + [enc], b"/Encrypt 5 0 R /ID [<%s> <%s>] " % (ids, ids))


def test_bad_files_are_error_rows_and_the_rest_completes(tmp_path, panels):
    good = tmp_path / "good.pdf"
    write_pdf(good, [figure(panels["a"], panels["b"])])
    bad = {
        "encrypted.pdf": encrypted_pdf(),
        "damaged.pdf": good.read_bytes()[: len(good.read_bytes()) // 3],
        "empty.pdf": b"",
        "huge.pdf": _pdf(_page_with_image(100000, 100000, zlib.compress(bytes(1000)))),
        "notapdf.pdf": b"<html>this is a web page saved as .pdf</html>",
        "noimages.pdf": _pdf(_blank_page()),
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
        "notes.docx": b"PK\x03\x04",
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    paths = [good] + [tmp_path / n for n in bad]
    proc, out = run(tmp_path, *paths)
    assert proc.returncode == 0, proc.stderr
    reasons = {os.path.basename(e["file"]): e["reason"].split(":")[0] for e in out["errors"]}
    assert reasons == {"encrypted.pdf": "encrypted_pdf", "damaged.pdf": "damaged_pdf", "empty.pdf": "empty_file",
                       "huge.pdf": "too_large", "notapdf.pdf": "not_a_pdf", "noimages.pdf": "no_images",
                       "corrupt.png": "corrupt_image", "notes.docx": "unsupported_format"}, out["errors"]
    assert len(out["errors"]) == len(bad)
    summary = json.loads(proc.stdout.splitlines()[0])
    assert summary["unreadable"] == len(bad) and summary["images"] == 1 and summary["documents"] == len(paths)
    strict, _ = run(tmp_path / "strict", *paths, extra=("--strict",))
    assert strict.returncode == 1
    html = (out["dir"] / "index.html").read_text()
    assert all(os.path.basename(str(p)) in html for p in paths[1:])


def test_fifos_named_like_a_pdf_or_an_image_are_error_rows_not_hangs(tmp_path, panels):
    """Only regular files are opened: a FIFO would block the reader forever."""
    folder = tmp_path / "paper"
    folder.mkdir()
    write_pdf(folder / "good.pdf", [figure(panels["a"], panels["b"])])
    os.mkfifo(folder / "x.pdf")
    os.mkfifo(folder / "p.png")
    proc, out = run(tmp_path, folder)
    assert proc.returncode == 0, proc.stderr
    reasons = {os.path.basename(e["file"]): e["reason"].split(":")[0] for e in out["errors"]}
    assert reasons == {"x.pdf": "not_a_file", "p.png": "not_a_file"}, out["errors"]


def _check_html(folder, findings) -> None:
    """Every picture the page shows exists (and only files in the report folder), every file in
    pictures/ is shown, and every finding appears with both places."""
    html = (folder / "index.html").read_text()
    shown = re.findall(r'<img src="([^"]+)"', html)
    assert shown and all(os.path.isfile(folder / s) and not s.startswith(("http", "/", "..")) for s in shown)
    assert set(shown) == {f"pictures/{n}" for n in os.listdir(folder / "pictures")}
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for f in findings:
        block = html.split(f'id="finding-{f["id"]}"')[1].split('class="finding"')[0]
        assert "These two regions match" in block and f["transform"] in block
        for side in ("a", "b"):
            x, y, w, h = f[side]["box"]
            assert f"box x={x} y={y} {w}x{h}" in block
    assert " is a copy of " not in html


def test_screening_never_imports_tensorflow_or_beam():
    code = ("import sys, serving.screen, serving.documents, serving.screen_report, preprocessing.matching.across; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'apache_beam', 'keras')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_output_rule_refuses_a_used_folder(tmp_path, panels):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "mine.txt").write_text("keep")
    img = tmp_path / "fig.png"
    cv2.imwrite(str(img), figure(panels["a"])[:, :, ::-1])
    proc, _ = run(tmp_path, img)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    proc, out = run(tmp_path, img, extra=("--overwrite",))
    assert proc.returncode == 0 and (out["dir"] / "mine.txt").read_text() == "keep"
    assert screen.owned("index.html") and not screen.owned("mine.txt")


def test_rendered_pages_are_compared_with_rendered_pages(tmp_path, panels):
    pdf = tmp_path / "paper.pdf"
    write_pdf(pdf, [figure(panels["a"], panels["b"]), figure(panels["c"], np.ascontiguousarray(panels["a"][:, ::-1]))])
    proc, out = run(tmp_path, pdf, extra=("--render_pages", "100"))
    assert proc.returncode == 0, proc.stderr
    across = [f for f in out["findings"] if f["kind"] == "across"]
    assert sorted(f["a"]["rendered_page"] for f in across) == [False, True], across
    assert all(f["a"]["rendered_page"] == f["b"]["rendered_page"] and {f["a"]["page"], f["b"]["page"]} == {1, 2}
               for f in across)
    assert json.loads(proc.stdout.splitlines()[0])["images"] == 4


def test_a_folder_of_paper_folders_is_one_document_per_paper(tmp_path, panels):
    for paper, pair in (("p1", ("a", "b")), ("p2", ("c", "a"))):
        (tmp_path / "papers" / paper).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "papers" / paper / "fig.png"), figure(*(panels[p] for p in pair))[:, :, ::-1])
    proc, out = run(tmp_path, tmp_path / "papers")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["documents"] == 2
    assert out["findings"] == []  # the same panel in two papers: not compared (one document at a time)


def _turn(p: np.ndarray, angle: float) -> np.ndarray:
    h, w = p.shape[:2]
    return cv2.warpAffine(p, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("change,check", [
    (lambda p: p[30:170, 40:200], lambda m: m.identical and abs(m.box_a[0] - 40) <= 3 and abs(m.box_a[1] - 30) <= 3),
    (lambda p: _turn(p, 20.0), lambda m: not m.transform.flip and abs(m.transform.angle - 20) < 3),
    (lambda p: cv2.resize(p, None, fx=0.7, fy=0.7), lambda m: abs(m.transform.scale - 0.7) < 0.05),
    (lambda p: np.clip(p.astype(np.float32) * 0.7 + 40, 0, 255).astype(np.uint8), lambda m: m.correlation > 0.9),
])
def test_match_panels_finds_a_transformed_reuse_and_says_how(panels, change, check):
    from preprocessing.matching.across import match_panels

    m = match_panels(panels["a"], np.ascontiguousarray(change(panels["a"])))
    assert m is not None and check(m), m
    assert match_panels(panels["a"], panels["d"]) is None  # another part of the same photograph
