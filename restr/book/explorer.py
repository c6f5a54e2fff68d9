"""The interactive explorer of chapter 5: pick an image, type an expression, see the
mask, the patch-level map and the seed's attention over the words."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..data.vocab import tokenize
from . import viz


def truncation_note(result: dict[str, Any], words: list[str] | None) -> str:
    """"24 words: the model reads the first 20 (ignored: ...)" for a cut expression, else ""."""
    dropped = result.get("truncated_words") or []
    if not dropped:
        return ""
    kept = len(words) if words else None
    total = (kept or 0) + len(dropped)
    head = f"{total} words: the model reads the first {kept}" if kept else "the expression was cut"
    return f"{head} (ignored: {' '.join(dropped)})"


def show_prediction(rgb: np.ndarray, text: str, result: dict[str, Any], words: list[str] | None = None,
                    patch_size: int | None = None):
    """One figure: the mask over the image, the patch map, the seed's attention on words.

    The layout is fixed (no ``tight_layout``) and the expression is written above the
    panels from the left, so the panels stay where they are when another expression
    (longer, other words) is typed. With ``patch_size``, the patch map is drawn over the
    letterboxed input as the model saw it (``result["letterbox"]``).
    """
    import matplotlib.pyplot as plt


    attn = result.get("seed_attention")
    ncols = 3 if attn else 2
    fig = plt.figure(figsize=(4.2 * ncols, 4.4))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.12, top=0.84, wspace=0.45 if attn else 0.1)
    axes = fig.subplots(1, ncols)
    fig.text(0.01, 0.98, f'"{text}"', ha="left", va="top", fontsize=11)
    viz.overlay(axes[0], rgb, result["mask"], title="mask")
    meta = result.get("letterbox")
    extent = viz.letterbox_extent(meta, patch_size) if meta is not None and patch_size else None
    viz.map_over_image(axes[1], rgb, result["patch_map"], title="patch-level map", vmin=0, vmax=1, extent=extent)
    note = truncation_note(result, words)
    if note:
        fig.text(0.01, 0.01, note, ha="left", va="bottom", fontsize=9, color="tab:red")
    if attn:
        last = attn[-1]
        n = len(words) if words else last.num_words
        lang = last.language[0].detach().float().numpy()[-n:] if n else np.zeros(0)
        seed = float(last.seed[0])
        labels = (words or [f"w{i}" for i in range(n)]) + ["seed"]
        axes[2].barh(range(len(labels)), list(lang) + [seed], color=["tab:orange"] * n + ["tab:gray"])
        axes[2].set_yticks(range(len(labels)))
        axes[2].set_yticklabels(labels)
        axes[2].invert_yaxis()
        visual = float(last.visual[0].sum())
        axes[2].set_title(f"seed attention, layer f_{last.layer} (visual: {100 * visual:.0f}%)", fontsize=9)
        axes[2].set_xlabel("attention weight")
    return fig


class Explorer:
    """ipywidgets front end over a :class:`restr.eval.predict.Predictor` and a data set."""

    def __init__(self, predictor, dataset, max_images: int = 200):
        self.predictor = predictor
        self.dataset = dataset
        seen: dict[int, str] = {}
        for ref in dataset.refs:
            seen.setdefault(int(ref["image_id"]), ref["sentences"][0]["sent"])
            if len(seen) >= max_images:
                break
        self.examples = seen

    def run(self, image_id: int, text: str):
        """Predict and draw for one (image, expression); returns the figure."""

        rgb = self.dataset.load_image(image_id)
        result = self.predictor.predict(rgb, text, return_attention=True)  # warns if the expression is cut
        words = tokenize(text)[: self.predictor.cfg.model.max_words]
        return show_prediction(rgb, text, result, words, patch_size=self.predictor.cfg.model.patch_size)

    def widget(self):
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        pick = w.Dropdown(options=[(f"image {i}", i) for i in self.examples], description="image")
        text = w.Text(value=next(iter(self.examples.values()), ""), description="expression",
                      layout=w.Layout(width="60%"))
        go = w.Button(description="segment")
        out = w.Output()

        def on_pick(change):
            text.value = self.examples[change["new"]]

        def on_go(_):
            out.clear_output(wait=True)
            with out:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        fig = self.run(pick.value, text.value)
                    for w in caught:  # every word unknown; words past max_words
                        if issubclass(w.category, UserWarning):
                            print(f"note: {w.message}")
                    display(fig)
                    plt.close(fig)
                except ValueError as exc:  # empty or unknown-only expression, bad image
                    print(f"cannot segment: {exc}")

        pick.observe(on_pick, names="value")
        go.on_click(on_go)
        text.on_submit(on_go)
        return w.VBox([w.HBox([pick, go]), text, out])
