"""The run folder: what ``python -m restr train`` writes and everything else reads.

:mod:`~restr.runs.folder` is the format (config.json, vocab.json, metrics.jsonl,
checkpoints/, reading a run back as a model); :mod:`~restr.runs.lock` keeps one process
at a time training a folder. Both the engine (which writes runs) and the evaluation
(which reads them) sit above this package.
"""
