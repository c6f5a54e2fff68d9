"""restr.book.viz: the layouts the figures rely on (headless, Agg backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402

from restr.book import viz  # noqa: E402
from restr.data.transforms import LetterboxMeta  # noqa: E402


def test_similarity_blocks_lays_each_position_out_on_the_grid():
    gh, gw = 2, 3
    sim = np.arange(gh * gw * gh * gw, dtype=float).reshape(gh, gw, gh, gw)
    blocks = viz.similarity_blocks(sim)
    assert blocks.shape == (gh * gh, gw * gw)
    for y in range(gh):
        for x in range(gw):
            np.testing.assert_array_equal(blocks[y * gh:(y + 1) * gh, x * gw:(x + 1) * gw], sim[y, x])


def test_letterbox_extent_in_patches():
    # a 100 x 50 image scaled to 64 x 32 and centred in a 64 x 64 input of 8 x 8 patches
    meta = LetterboxMeta(orig_h=100, orig_w=50, scale=0.64, pad_top=0, pad_left=16, new_h=64, new_w=32,
                         out_h=64, out_w=64)
    assert viz.letterbox_extent(meta, 8) == (2.0, 6.0, 8.0, 0.0)


def test_bars_put_each_interval_on_its_bar():
    fig, ax = plt.subplots()
    viz.bars(ax, ["a", "b", "c"], {"ours": [10, 20, 30], "paper": [15, np.nan, 35]},
             errors={"ours": [(8, 12), (15, 26), (29, 31)]})
    ours, paper = (c for c in ax.containers if isinstance(c, BarContainer))
    assert [bar.get_height() for bar in ours] == [10, 20, 30]
    centres = [bar.get_x() + bar.get_width() / 2 for bar in ours]
    assert all(abs(c - p.get_x() - p.get_width() / 2) > 0.1 for c, p in zip(centres, paper))  # side by side
    # one vertical segment per interval, from lo to hi, at the centre of its bar
    segments = [seg for c in ax.containers if isinstance(c, ErrorbarContainer)
                for seg in c.lines[2][0].get_segments()]
    got = np.array(sorted((seg[0][0], seg[0][1], seg[1][1]) for seg in segments))
    np.testing.assert_allclose(got, sorted(zip(centres, [8, 15, 29], [12, 26, 31])), atol=1e-9)
    plt.close(fig)


def test_curve_over_seeds_draws_a_band_only_for_several_seeds():
    one = pd.DataFrame({"step": [1, 2, 3], "iou": [0.1, 0.2, 0.3], "seed": 0})
    two = pd.concat([one, one.assign(seed=1, iou=one.iou + 0.1)])
    for data, bands, label in ((one, 0, "1 seed"), (two, 1, "2 seeds")):
        fig, ax = plt.subplots()
        viz.curve_over_seeds(ax, data, x="step", y="iou", label="curve", scale=100)
        assert len(ax.collections) == bands
        assert ax.get_legend_handles_labels()[1] == [f"curve ({label})"]
        np.testing.assert_allclose(ax.lines[0].get_ydata(), 100 * data.groupby("step").iou.mean().to_numpy())
        plt.close(fig)
