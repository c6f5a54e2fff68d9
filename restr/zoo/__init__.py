"""Trained runs kept for reuse: :mod:`~restr.zoo.cache` (``get_run(cfg)``: a finished run of a
config, cached in ``runs/``, rebuilt from the zoo, or trained now) and :mod:`~restr.zoo.manifest`
(the models shipped in ``data/zoo/``: identity, checks, export). What a book profile trains
into the zoo (``zoo train``) is :mod:`restr.book.zoo_train`."""
