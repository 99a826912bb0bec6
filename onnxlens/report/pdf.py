"""The PDF: the report page laid out by WeasyPrint through its print stylesheet (A4, running
header, page numbers, a table of contents with page numbers, numbered figures and tables).

WeasyPrint, not a browser or matplotlib's PDF backend: it reads the same HTML and CSS (one
document, two formats), implements CSS paged media (page counters, ``target-counter`` for the
contents), and is a Python package; it needs the Pango library from the system (Debian:
``libpango-1.0-0 libpangoft2-1.0-0``), which most desktop and server images already carry.
"""

from __future__ import annotations

import logging
from pathlib import Path

from onnxlens.errors import OnnxLensError
from onnxlens.files import write_atomic


class PdfError(OnnxLensError):
    """The PDF could not be written (WeasyPrint or the system's Pango library is missing)."""


def write_pdf(html: str, path: Path) -> Path:
    """Lay out ``html`` (a self-contained page: no external resources are fetched) as ``path``."""
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    except (ImportError, OSError) as exc:
        raise PdfError(f"cannot write a PDF: WeasyPrint could not load ({str(exc).splitlines()[0]}); it needs "
                       "the Pango library (Debian/Ubuntu: apt-get install libpango-1.0-0 libpangoft2-1.0-0)") from None
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # only embedded data: URIs are read; the page never reaches the network or the disk
    fetcher = URLFetcher(allowed_protocols={"data"})
    write_atomic(Path(path), HTML(string=html, url_fetcher=fetcher).write_pdf())
    return Path(path)
