"""Evaluation: the paper's metrics, scoring runs, predicting.

:mod:`~restr.eval.metrics` (cumulative and mean IoU, Prec@X, length buckets),
:mod:`~restr.eval.evaluate` (the evaluator, inference over a data set, whole runs, the swap
control) and :mod:`~restr.eval.predict` (one image and one expression). Everything here
reads runs (:mod:`restr.runs`); nothing here trains.
"""
