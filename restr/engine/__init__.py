"""The engine: everything that trains a model.

:mod:`~restr.engine.trainer` (the :class:`~restr.engine.trainer.Trainer` and
:func:`~restr.engine.trainer.train`), :mod:`~restr.engine.step` (one optimiser step with
no host-device sync), :mod:`~restr.engine.optim` (AdamW, the lr schedule),
:mod:`~restr.engine.checkpointer` (checkpoints and resumption), :mod:`~restr.engine.distributed`
(torchrun), :mod:`~restr.engine.pretrain` (the small ViT's pretraining) and
:mod:`~restr.engine.assets` (the files a config needs, checked before any work).
"""
