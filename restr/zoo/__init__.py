"""Trained runs kept for reuse: :mod:`~restr.zoo.cache` (``get_run(cfg)``: a finished run of a
config, cached in ``runs/``, rebuilt from the zoo, or trained now), :mod:`~restr.zoo.manifest`
(the models shipped in ``data/zoo/``: identity, checks, export) and :mod:`~restr.book.zoo_train`
(``zoo train``: what a book profile needs and the zoo lacks)."""
