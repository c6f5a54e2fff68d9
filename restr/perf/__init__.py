"""Cost and speed: :mod:`~restr.perf.cost` (parameters and MACs per module, measured under
a FLOP counter) and :mod:`~restr.perf.bench` (training and inference steps timed side by
side, the machine's matmul peak, the data loader's rate)."""
