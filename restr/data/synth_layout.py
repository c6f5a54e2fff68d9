"""Where synthref's shapes may go: the scene kinds, the radii and the spacing rules that
every data set version places its shapes by (:mod:`.synth_v1`, :mod:`.synth_v2`)."""
from __future__ import annotations

SHAPES_PER_SCENE = {"sparse": (3, 4), "crowded": (5, 6)}
RADIUS = {"small": (0.12, 0.14), "big": (0.19, 0.23)}  # fraction of the shorter side
PLACEMENT_TRIES = 60                      # positions tried per shape before the scene is redrawn
SPARSE_GAP = 2                            # pixels between the outlines of shapes in a sparse scene
CROWDED_OVERLAP = 0.62                    # crowded: centres at least 0.62 x (r1 + r2) apart


def min_distance(kind: str, r1: float, r2: float) -> float:
    """The least distance between the centres of two shapes of radii ``r1`` and ``r2``."""
    return (r1 + r2 + SPARSE_GAP) if kind == "sparse" else CROWDED_OVERLAP * (r1 + r2)
