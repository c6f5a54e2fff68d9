"""Every page of the smoke site in headless Chromium, with the network off.

The site is served from this machine (a loopback HTTP server) and every request to any
other host is aborted, so a page that needs the internet (a CDN's MathJax, a web font)
fails here. Each page must load with no console error, no failed request, no broken
image, its math typeset by the MathJax served with the site (no raw TeX left) and its
code cells within the page width. Screenshots go to ``<smoke book>/screenshots/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_harness import chromium, offline, serve_folder

from restr.book import site

pytestmark = pytest.mark.slow

CHECK_PAGE = """() => {
  const maths = Array.from(document.querySelectorAll('.math'));
  const raw = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80));
  const tex = /\\\\\\(|\\\\\\[|\\$\\$/.test(document.body.innerText);
  const images = Array.from(document.images);
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));
  const wide = Array.from(document.querySelectorAll('div.cell_input pre'))
    .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.slice(0, 60));
  return {maths: maths.length, typeset: document.querySelectorAll('mjx-container').length, raw, tex,
          images: images.length, broken, wide};
}"""


def site_pages(html: Path) -> list[str]:
    """Every page but index.html, which only redirects to the intro."""
    skip = {"_static", "_sources", "_images"}
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html") if not set(p.parts) & skip)
    assert 'url=book/intro.html"' in (html / "index.html").read_text()
    return [p for p in pages if p != "index.html"]


def test_site_serves_the_pinned_mathjax(smoke_book):
    html = smoke_book / "build" / "html"
    served = html / "_static" / "mathjax"
    assert (served / "tex-mml-chtml.js").read_bytes() == (site.mathjax_dir() / "tex-mml-chtml.js").read_bytes()
    assert (served / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").is_file()
    assert site.mathjax_version() == "3.2.2"  # the version requirements.txt pins
    page = (html / "notebooks" / "02_fusion_variants.html").read_text()
    assert 'src="../_static/mathjax/tex-mml-chtml.js' in page and "cdn.jsdelivr" not in page


def test_every_page_renders_offline(smoke_book, tmp_path):
    html = smoke_book / "build" / "html"
    shots = smoke_book / "screenshots"
    shots.mkdir(exist_ok=True)
    pages = site_pages(html)
    assert "book/intro.html" in pages and "notebooks/02_fusion_variants.html" in pages
    report = {}
    with serve_folder(html) as base, chromium(tmp_path / "chromium-profile") as ctx:
        blocked = offline(ctx)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
        for name in pages:
            errors.clear()
            page.goto(f"{base}/{name}", wait_until="load")
            # MathJax typesets after load; its startup promise settles when it is done
            page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
            result = page.evaluate(CHECK_PAGE)
            # the fonts MathJax asked for finish loading on this page, not while the next one loads
            # (a navigation aborts a request still in flight, which would be reported as the next page's)
            page.wait_for_load_state("networkidle")
            report[name] = {**result, "errors": list(errors)}
            if name in ("notebooks/02_fusion_variants.html", "notebooks/01_patch_embedding.html"):
                page.screenshot(path=str(shots / name.replace("/", "_").replace(".html", ".png")), full_page=False)
        (shots / "site-report.json").write_text(json.dumps(report, indent=1))
    assert not blocked, f"pages asked for other hosts: {sorted(set(blocked))[:10]}"
    problems = {name: r for name, r in report.items()
                if r["errors"] or r["raw"] or r["tex"] or r["broken"] or r["wide"] or r["typeset"] < r["maths"]}
    assert not problems, json.dumps(problems, indent=1)[:4000]
    # the chapters with equations were typeset, and the figures are there
    assert report["notebooks/02_fusion_variants.html"]["typeset"] >= 10
    assert report["notebooks/01_patch_embedding.html"]["typeset"] > 0
    assert report["notebooks/03_decoder_effects.html"]["typeset"] > 0
    assert all(report[f"notebooks/{n}"]["images"] > 0 for n in ("01_patch_embedding.html", "04_length_buckets.html"))
