"""Chapter 5 where students use it: JupyterLab in Chromium, the explorer typed into.

``jupyter lab`` runs on the loopback interface with a token, on a copy of
``05_try_it.ipynb`` whose parameters point at a book's data and trained model
(papermill's ``prepare_only``: parameters injected, nothing executed). Chromium opens
it, runs all cells from the Run menu, segments the explorer's default expression,
types an expression for another object of the same image, and compares the figure
shown before and after with what the model itself predicts for the two expressions:
the mask panel must change exactly when the predicted masks differ, and the prediction
panels must change. Screenshots go to ``<smoke book>/screenshots/``.

The smoke book's model (30 steps) predicts an empty mask for every expression, so
with it the patch-level map is what changes and the mask panel must stay as it is; a
model that segments (the quick book's) must change the mask panel.
"""
from __future__ import annotations

import base64
import io
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from browser_harness import chromium, free_port, offline

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "05_try_it.ipynb"
KERNEL_IDLE = "() => / \\| Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent || '')"
ALL_CELLS_RAN = """() => {
  const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt'));
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""
# no "get notified about Jupyter news?" toast over the page
NO_NEWS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"fetchNews": "false"}'}


@dataclass
class Book:
    """Where the notebook's parameters point: a profile, its data and its runs, as the
    strings the notebook gets (they are part of the cached runs' config hash)."""

    profile: str
    data_root: str
    runs_dir: str
    folder: Path  # where the notebook is put (relative paths would start there)
    shots: Path


@pytest.fixture
def book(smoke_book, tmp_path) -> Book:
    folder = tmp_path / "lab"
    folder.mkdir()
    # the strings the batch run gave (absolute: the smoke book lies outside the repository)
    return Book("smoke", str((smoke_book / "data").resolve()), str((smoke_book / "runs").resolve()), folder,
                smoke_book / "screenshots")


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(book, tmp_path):
    """A JupyterLab server over the folder holding the parameterised chapter 5; yields
    (base URL, token)."""
    import papermill as pm

    params = {"profile": book.profile, "data_root": book.data_root, "runs_dir": book.runs_dir, "interactive": True}
    pm.execute_notebook(str(REPO / "notebooks" / NOTEBOOK), str(book.folder / NOTEBOOK), parameters=params,
                        prepare_only=True, progress_bar=False)
    for name, text in NO_NEWS.items():
        (tmp_path / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "settings" / name).write_text(text)
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    log = tmp_path / "jupyter-lab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={book.folder}", "--allow-root", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=book.folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/status?token={token}", proc, log)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def predictions(book: Book) -> tuple[str, str, dict[str, bool]]:
    """The explorer's default expression (the first validation image's first one), an
    expression for another object of that image, and whether the model's mask and
    patch-level map differ between the two."""
    from restr.book.models import model_config
    from restr.book.runner import book_profile
    from restr.data import ReferDataset
    from restr.eval.predict import Predictor
    from restr.zoo.cache import get_run

    def here(p: str) -> Path:
        return (book.folder / p).resolve()

    prof = book_profile(book.profile)
    run = get_run(model_config(prof, book.data_root, "main"), here(book.runs_dir), train_if_missing=False)
    val = ReferDataset(here(book.data_root), prof.dataset, prof.split_by, prof.eval_split)
    first = val.refs[0]
    other = next(r for r in val.refs if r["image_id"] == first["image_id"] and r["ann_id"] != first["ann_id"])
    texts = first["sentences"][0]["sent"], other["sentences"][0]["sent"]
    predictor = Predictor.from_run(run)
    rgb = val.load_image(int(first["image_id"]))
    a, b = (predictor.predict(rgb, t) for t in texts)
    differ = {"mask": bool((np.asarray(a["mask"]) != np.asarray(b["mask"])).any()),
              "patch_map": bool(np.abs(np.asarray(a["patch_map"]) - np.asarray(b["patch_map"])).max() > 1e-3)}
    return texts[0], texts[1], differ


def image(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def panels(img: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The explorer figure's mask panel and patch-map panel (the left and middle thirds of
    a figure ``width`` pixels wide; the layout is fixed from the left), below the
    expression written above them."""
    body = img[int(0.1 * img.shape[0]):]
    return body[:, : width // 3], body[:, width // 3: 2 * width // 3]


def output_png(page) -> bytes:
    src = page.locator(".widget-output img").first.get_attribute("src")
    assert src and src.startswith("data:image/png;base64,"), src
    return base64.b64decode(src.split(",", 1)[1])


def test_explorer_in_jupyterlab(book, lab, tmp_path):
    base, token = lab
    book.shots.mkdir(exist_ok=True)
    default, typed, differ = predictions(book)
    assert differ["patch_map"], "the model's prediction does not depend on the expression"
    with chromium(tmp_path / "chromium-profile", width=1400, height=1000) as ctx:
        blocked = offline(ctx)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()  # the notebook has the focus

        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        page.wait_for_function(ALL_CELLS_RAN, timeout=600_000)
        text_box = page.locator(".widget-text input")
        text_box.wait_for(timeout=60_000)  # the last cell displays the explorer
        assert text_box.input_value() == default
        explorer = page.locator(".jupyter-widgets.widget-vbox").last
        explorer.scroll_into_view_if_needed()

        page.locator("button.jupyter-button", has_text="segment").click()
        page.wait_for_selector(".widget-output img", timeout=120_000)
        before = output_png(page)
        explorer.screenshot(path=str(book.shots / f"explorer-{book.profile}-before.png"))

        text_box.fill(typed)
        text_box.press("Enter")
        page.wait_for_function(
            "old => { const i = document.querySelector('.widget-output img');"
            " return i && !i.src.endsWith(old); }", arg=base64.b64encode(before).decode()[-64:], timeout=120_000)
        after = output_png(page)
        explorer.screenshot(path=str(book.shots / f"explorer-{book.profile}-after.png"))
        page.screenshot(path=str(book.shots / f"jupyterlab-{book.profile}.png"))
    assert not blocked, f"JupyterLab asked for other hosts: {sorted(set(blocked))[:10]}"
    assert not errors, errors
    a, b = image(before), image(after)
    assert a.shape[0] == b.shape[0] and abs(a.shape[1] - b.shape[1]) < a.shape[1] // 4
    (mask_a, map_a), (mask_b, map_b) = panels(a, a.shape[1]), panels(b, a.shape[1])
    mask_changed = float((np.abs(mask_a - mask_b).max(-1) > 24).mean())
    map_changed = float((np.abs(map_a - map_b).max(-1) > 0).mean())
    assert map_changed > 0, "the patch-level map shown did not change"
    if differ["mask"]:
        assert mask_changed > 0.002, f"the model's masks differ but the mask shown hardly changed ({mask_changed:.3%})"
    else:
        assert mask_changed == 0, f"the model's masks are equal but the mask shown changed ({mask_changed:.3%})"
