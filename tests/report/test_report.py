"""Reports: the versioned bundle and its schema, rendering from the bundle alone (no model, no
dataset), the PDF's pages, escaping of hostile model strings, the summary's rules, and the pages
as a person sees them, in headless Chromium and through pdftoppm."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from conftest import MODELS
from onnxlens.pipelines import audit
from onnxlens.bundle import SCHEMA, BundleError, load_bundle
from onnxlens.evaluation.verdict import findings

DIGITS = MODELS / "samples" / "digits" / "test.npz"


def _audit(tmp_path, model=None, **overrides):
    """A small audit of copies of the digits model and data (so they can be taken away)."""
    model_path = tmp_path / "digits.onnx"
    if model is None:
        shutil.copy(MODELS / "digits_cnn.onnx", model_path)
    else:
        model_path.write_bytes(model.SerializeToString())
    shutil.copy(DIGITS, tmp_path / "digits.npz")
    config = {"model": str(model_path), "dataset": {"path": str(tmp_path / "digits.npz"), "limit": 6, "labels_key": "y"},
              "methods": ["gradient", "lrp"], "metrics": ["deletion", "insertion", "model_randomization"],
              "batch_size": 3, "output": str(tmp_path / "run"), "gallery_size": 3, "formats": ["html", "pdf"],
              **overrides}
    return audit.audit_directly(config), tmp_path / "run"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One audit run shared by the tests that only read it."""
    return _audit(tmp_path_factory.mktemp("report"))


def _pdf_text(path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() for page in PdfReader(path).pages]


def test_bundle_matches_its_json_schema(finished, cli):
    import jsonschema

    results, run = finished
    stored = json.loads((run / "results.json").read_text())
    assert stored["schema"] == SCHEMA and load_bundle(run) == stored
    printed = cli("report", "--schema")
    assert printed.returncode == 0
    schema = json.loads(printed.stdout)
    assert schema["$id"] == SCHEMA and {"schema", "model", "verdict", "arrays"} <= set(schema["required"])
    jsonschema.validate(stored, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**stored, "verdict": {"passed": "yes"}}, schema)
    assert stored["environment"]["providers"] == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in stored["environment"]["packages"] or "onnxruntime" in stored["environment"]["packages"]
    assert len(stored["arrays"]["explanations"]["lrp"]) == 2
    frequency = stored["frequency"]
    assert set(frequency["maps"]) == {"gradient", "lrp"} and stored["arrays"]["frequency"] == "frequency.npz"
    with np.load(run / "frequency.npz") as arrays:
        assert len(frequency["first_layer"]["high_frequency_share"]) == frequency["first_layer"]["filters"] \
            == len(arrays["filters"]) == len(arrays["responses"])
    assert all((run / p).exists() for paths in stored["arrays"]["explanations"].values() for p in paths)


def test_bundle_errors_name_the_problem(tmp_path):
    with pytest.raises(BundleError, match="no results.json"):
        load_bundle(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema": "onnxlens.audit/1"}))
    with pytest.raises(BundleError, match="onnxlens.audit/1.*re-run the audit"):
        load_bundle(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema": SCHEMA, "created": "now"}))
    with pytest.raises(BundleError, match="does not match .*environment: Field required"):
        load_bundle(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle(tmp_path)


def test_report_re_renders_from_the_bundle_alone(tmp_path, cli):
    results, run = _audit(tmp_path)
    page = (run / "report.html").read_text()
    verdict = (run / "verdict.json").read_text()
    assert page.count('alt="gradient overlay of') == 3 and page.count('alt="lrp overlay of') == 3
    assert 'alt="Deletion (lower is better)"' in page and 'alt="Sanity check: cascading randomization"' in page
    assert 'alt="Radial power spectrum of the maps"' in page and 'alt="First-layer frequency responses"' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for section in ("summary", "model", "explanations", "faithfulness", "sanity", "frequency", "timings"):
        assert f'<a href="#{section}">' in page and f'id="{section}"' in page
    assert (run / "report.pdf").read_bytes().startswith(b"%PDF")
    # the model and the dataset go away; the run folder still renders, to the same page
    (tmp_path / "digits.onnx").unlink()
    (tmp_path / "digits.npz").unlink()
    for name in ("report.html", "report.pdf", "verdict.json"):
        (run / name).unlink()
    result = cli("report", run)
    assert result.returncode == 0, result.stderr
    assert (run / "report.html").read_text() == page and (run / "verdict.json").read_text() == verdict
    assert (run / "report.pdf").exists()
    # findings were judged when the run finished: the page shows the stored ones, not new ones
    stored = json.loads((run / "results.json").read_text())
    stored["findings"]["methods"][0]["faithfulness"]["text"] = "judged by an earlier onnxlens"
    (run / "results.json").write_text(json.dumps(stored))
    assert cli("report", run).returncode == 0
    assert "judged by an earlier onnxlens" in (run / "report.html").read_text()
    assert cli("report", run, "--formats", "html,docx").returncode == 1
    missing = cli("report", tmp_path)
    assert missing.returncode == 1 and "no results.json" in missing.stderr


def test_pdf_is_a4_with_contents_page_numbers_and_captions(finished):
    from pypdf import PdfReader

    _, run = finished
    reader = PdfReader(run / "report.pdf")
    pages = len(reader.pages)
    assert pages >= 4
    assert all(abs(float(p.mediabox.width) - 595.3) < 1 and abs(float(p.mediabox.height) - 841.9) < 1
               for p in reader.pages)
    text = _pdf_text(run / "report.pdf")
    assert "Contents" in text[0] and f"page 1 of {pages}" in text[0]
    assert all(f"page {i} of {pages}" in t for i, t in enumerate(text, 1))
    contents = re.findall(r"(Summary|Model card|Explanations|Faithfulness|Sanity checks) \.+ (\d+)", text[0])
    assert len(contents) == 5 and all(1 <= int(n) <= pages for _, n in contents)
    faithfulness_page = int(dict(contents)["Faithfulness"])
    assert "Faithfulness" in text[faithfulness_page - 1]
    everything = "\n".join(text)
    assert "Figure 1." in everything and "Table 1." in everything and "Figure 3." in everything


def test_hostile_model_strings_render_as_text(tmp_path):
    model = onnx.load(MODELS / "digits_cnn.onnx")
    model.producer_name = "<script>alert(1)</script>"
    model.doc_string = "</td></table><img src=x onerror=alert(2)>"
    onnx.helper.set_model_props(model, {"<b>key</b>": "<iframe src='https://evil.example'>"})
    _, run = _audit(tmp_path, model=model, metrics=["deletion"], gallery_size=1)
    page = (run / "report.html").read_text()
    for raw in ("<script>", "<img src=x", "<iframe", "<b>key"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    text = "\n".join(_pdf_text(run / "report.pdf"))
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(2)>" in text.replace("\n", "")


def test_missing_pango_keeps_every_other_result(tmp_path, monkeypatch):
    import onnxlens.report.pdf as pdf

    def broken(html, path):
        raise pdf.PdfError("cannot write a PDF: WeasyPrint could not load (no Pango)")

    monkeypatch.setattr(pdf, "write_pdf", broken)
    results, run = _audit(tmp_path, metrics=["deletion"])
    assert (run / "report.html").exists() and (run / "verdict.json").exists() and not (run / "report.pdf").exists()
    assert any(n.startswith("report.pdf not written") for n in results["provenance"]["notes"])
    assert any(n.startswith("report.pdf not written") for n in load_bundle(run)["provenance"]["notes"])


def _entry(family, higher, **means):
    return {"family": family, "summary": "", "results": {
        label.replace("__", ":"): {"mean": v, "higher_is_better": higher} for label, v in means.items()}}


def test_findings_follow_their_stated_rules():
    metrics = {"deletion": _entry("faithfulness", False, a=0.2, b=0.5, baseline__x=0.3),
               "insertion": _entry("faithfulness", True, a=0.9, b=0.95, baseline__x=0.8),
               "relevance_mass": _entry("localization", True, a=0.6, b=0.1, baseline__x=0.3),
               "model_randomization": {"family": "sanity", "summary": "", "results": {
                   "a": {"mean": 0.3, "spearman_abs_by_layer": [0.9, 0.2], "mode": "cascading"},
                   "b": {"mean": 0.8, "spearman_abs_by_layer": [0.9, 0.7], "mode": "cascading"}}}}
    a, b = findings(metrics, ["a", "b"])["methods"]
    assert a["faithfulness"]["status"] == "pass" and "deletion, insertion" in a["faithfulness"]["text"]
    assert b["faithfulness"]["status"] == "fail" and "deletion 0.5 vs x 0.3" in b["faithfulness"]["text"]
    assert a["sanity"]["status"] == "pass" and b["sanity"]["status"] == "fail" and "0.70" in b["sanity"]["text"]
    assert a["localization"]["status"] == "pass" and b["localization"]["status"] == "flag"
    a, b = findings(metrics, ["a", "b"], masks_mark="spurious")["methods"]
    assert a["localization"]["status"] == "flag" and "relies on it" in a["localization"]["text"]
    assert b["localization"]["status"] == "pass"
    none = findings({}, ["a"])["methods"][0]
    assert {none[k]["status"] for k in ("faithfulness", "sanity", "localization")} == {"none"}
    warned = findings({}, ["a", "b"], warnings={"a": ["batch 0: relevance is not conserved", "batch 1: x", "b2"]})
    a, b = warned["methods"]
    assert a["reliability"]["status"] == "flag" and "relevance is not conserved" in a["reliability"]["text"]
    assert "(and 1 more)" in a["reliability"]["text"] and b["reliability"]["status"] == "pass"


def test_a_method_that_warns_is_marked_unreliable(tmp_path, cli):
    """LRP-ε does not conserve relevance on the shapes model: the explain step's warning reaches
    the findings, the page and the command line."""
    config = {"model": str(MODELS / "shapes_cnn.onnx"), "output": str(tmp_path / "run"), "baselines": False,
              "dataset": {"path": str(MODELS / "samples" / "shapes" / "test.npz"), "limit": 8},
              "methods": [{"name": "lrp", "label": "lrp_eps", "params": {"preset": "epsilon"}}, "gradient"],
              "metrics": ["sparseness"], "batch_size": 4, "formats": ["html"], "gallery_size": 1}
    (tmp_path / "audit.json").write_text(json.dumps(config))
    result = cli("audit", tmp_path / "audit.json", "--runner", "direct")
    assert result.returncode == 0, result.stderr
    stored = load_bundle(tmp_path / "run")["findings"]["methods"]
    lrp, gradient = (next(f for f in stored if f["method"] == m) for m in ("lrp_eps", "gradient"))
    assert lrp["reliability"]["status"] == "flag" and "relevance is not conserved" in lrp["reliability"]["text"]
    assert gradient["reliability"]["status"] == "pass"
    assert "warning: lrp_eps: unreliable: batch 0: relevance is not conserved" in result.stderr
    assert "unreliable: batch" in (tmp_path / "run" / "report.html").read_text()


# --- as a person sees it -----------------------------------------------------------------------

_CHECK = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  const clipped = [...document.querySelectorAll("td, th, p, h1, h2, h3, li, figcaption, caption")]
    .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.slice(0, 40));
  document.body.setAttribute("data-check", JSON.stringify({images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).length, clipped,
    overflow: document.documentElement.scrollWidth > window.innerWidth}));
});</script></body>"""


def _tool(name):
    path = shutil.which(name)
    if path is None:
        if os.environ.get("ONNXLENS_REQUIRE_RENDER_TOOLS"):
            pytest.fail(f"{name} is required here (ONNXLENS_REQUIRE_RENDER_TOOLS) but not installed")
        pytest.skip(f"{name} not installed (Debian: apt-get install chromium poppler-utils)")
    return path


def _chromium(*args, timeout=120):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]
    return subprocess.run([_tool("chromium"), *flags, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_pages_render_for_a_person(finished, tmp_path):
    from PIL import Image

    _, run = finished
    # HTML in headless Chromium: every image decodes, no text overflows its box, the page is
    # no wider than a 1000-px window; a screenshot shows the page (a copy with a probe script)
    probe = tmp_path / "probe.html"
    probe.write_text((run / "report.html").read_text().replace("</body>", _CHECK))
    profile = tmp_path / "profile"
    dom = _chromium(f"--user-data-dir={profile}", "--window-size=1000,1400", "--virtual-time-budget=10000",
                    "--dump-dom", probe.as_uri())
    found = re.search(r'data-check="([^"]+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["images"] >= 3 * 3 + 2 and check["broken"] == 0, check
    assert check["clipped"] == [] and not check["overflow"], check
    shot = tmp_path / "report.png"
    _chromium(f"--user-data-dir={profile}", "--window-size=1000,3000", f"--screenshot={shot}",
              (run / "report.html").as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (3000, 1000) and pixels.std() > 20
    # the PDF through pdftoppm: one PNG per page, none blank, the overlays in colour, and no
    # word outside the page (pdftotext -bbox)
    subprocess.run([_tool("pdftoppm"), "-r", "50", "-png", run / "report.pdf", tmp_path / "page"], check=True,
                   timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    from pypdf import PdfReader

    assert len(pages) == len(PdfReader(run / "report.pdf").pages)
    colourful = []
    for path in pages:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        assert (rgb < 200).any(axis=2).sum() > 1000, f"{path.name} is blank (header and footer only)"
        colourful.append(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).mean())
    assert max(colourful) > 0.05, "no page shows the coloured overlays"
    assert _words_inside_margins(run / "report.pdf", tmp_path) > 300
    # a run with many methods: wide metric tables still fit the page
    wide = json.loads((run / "results.json").read_text())
    for entry in wide["evaluation"]["metrics"].values():
        first = entry["results"]["gradient"]
        for k in range(8):
            entry["results"][f"method_{k}_with_a_rather_long_label"] = first
    from onnxlens.report.html import render_html
    from onnxlens.report.pdf import write_pdf

    write_pdf(render_html(wide), tmp_path / "wide.pdf")
    assert _words_inside_margins(tmp_path / "wide.pdf", tmp_path) > 300


def _words_inside_margins(pdf, tmp_path) -> int:
    """The number of words pdftotext finds; fails on any word beyond the 15-mm side margins
    (42.5 pt) — text that overflowed its box."""
    words = tmp_path / "words.html"
    subprocess.run([_tool("pdftotext"), "-bbox", pdf, words], check=True, timeout=120)
    boxes = re.findall(r'<page width="([\d.]+)" height="([\d.]+)">|xMin="([\d.]+)" yMin="([\d.]+)" '
                       r'xMax="([\d.]+)" yMax="([\d.]+)"', words.read_text())
    width = height = None
    for page_w, page_h, *box in boxes:
        if page_w:
            width, height = float(page_w), float(page_h)
            continue
        x0, y0, x1, y1 = map(float, box)
        assert 40 <= x0 and x1 <= width - 40 and 0 <= y0 and y1 <= height, f"a word outside the text area: {box}"
    return sum(1 for b in boxes if not b[0])
