"""The book: everything the notebooks and the site use, above the engine and the evaluation.

:mod:`~restr.book.runner` (``python -m restr book``: papermill, the site),
:mod:`~restr.book.chapter` (``open_chapter``: the one call at the top of every chapter), :mod:`~restr.book.models`
(the book's model list: what a notebook asks for is what the zoo trains),
:mod:`~restr.book.claims` and :mod:`~restr.book.verdict` (the paper's claims and the rules that
judge them), :mod:`~restr.book.analysis`, :mod:`~restr.book.viz`, :mod:`~restr.book.explorer` and
:mod:`~restr.book.glue` (what the chapters compute, draw and paste), :mod:`~restr.book.site` and
:mod:`~restr.book.progress` (the Sphinx extension, the live progress), :mod:`~restr.book.recipe`
(the sweep behind the tiny recipe), :mod:`~restr.book.fidelity` (the paper / release / ours
tables), :mod:`~restr.book.paper` (the paper's numbers), :mod:`~restr.book.source` (a chapter
shows the package's code) and :mod:`~restr.book.zoo_train` (``zoo train``).
"""
