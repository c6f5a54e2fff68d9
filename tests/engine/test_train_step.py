"""The training step (restr.engine.step.TrainStep) that both the trainer and the benchmark run.

On a GPU a host-device sync in the step stalls the CPU until the GPU is idle, so the
next step's kernels cannot be queued behind the current one. CI has no GPU, so the
syncs are caught on CPU instead: every operation that reads a tensor's value on the
host goes through ``aten._local_scalar_dense`` (``item``, ``bool``, ``float``, ``int``)
or produces a data-dependent shape (``nonzero``, ``masked_select``), and ``cpu``,
``tolist`` and ``numpy`` are Python methods that can be patched.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from restr.config import get_preset
from restr.engine.distributed import Dist
from restr.engine.optim import build_optimizer, build_scheduler
from restr.engine.step import Diverged, TrainStep
from restr.model import build_model
from restr.model.restr import ReSTR

SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "equal"}


class HostSync(AssertionError):
    pass


class NoHostSync(TorchDispatchMode):
    """Fail on any operation that would make the host wait for the device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            raise HostSync(f"host-device sync: aten.{name}")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def no_host_sync(monkeypatch):
    def refuse(name):
        def method(self, *a, **k):
            raise HostSync(f"host-device sync: Tensor.{name}()")
        return method

    def guard():
        monkeypatch.setattr(torch.Tensor, "cpu", refuse("cpu"))
        monkeypatch.setattr(torch.Tensor, "tolist", refuse("tolist"))
        monkeypatch.setattr(torch.Tensor, "numpy", refuse("numpy"))
        return NoHostSync()

    return guard


def make_step(**train):
    torch.manual_seed(0)
    cfg = get_preset("smoke", train={"iterations": 50, **train})
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(model, opt, sched, scaler, cfg.train, None, Dist())
    return cfg, model, step


def batch(cfg, seed: int, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.model.image_hw
    images = torch.randn(n, 3, h, w, generator=g)
    words = torch.randint(1, cfg.model.vocab_size, (n, cfg.model.max_words), generator=g)
    words[:, :12] = 0  # front padding, as the data layer writes it
    masks = (torch.rand(n, h, w, generator=g) > 0.5).float()
    return images, words, masks


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_step_never_reads_a_device_value_on_the_host(no_host_sync, monkeypatch):
    # the model refuses empty expressions by reading the words, on CPU only (not on a GPU)
    monkeypatch.setattr(ReSTR, "_refuse_empty", staticmethod(lambda words: None))
    cfg, model, step = make_step(grad_clip=1.0)
    step([batch(cfg, 0)])  # first step outside the guard: AdamW creates its state
    before = weights(model)
    with no_host_sync():
        for s in range(3):
            step([batch(cfg, 1 + s), batch(cfg, 10 + s)])  # two micro-batches, clipping on
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert step.window_steps == 4

    # the detector is real: the reads the trainer does at log steps are caught
    with pytest.raises(HostSync):
        with no_host_sync():
            step.check()
    with pytest.raises(HostSync):
        with no_host_sync():
            float(step.grad_norm)


def test_a_non_finite_loss_freezes_the_weights_until_the_host_looks(tmp_path):
    cfg, model, step = make_step()
    step([batch(cfg, 0)])
    step([batch(cfg, 1)])
    step.check()  # nothing wrong yet
    good = weights(model)
    moments = {k: v.clone() for k, v in step.optimizer.state[next(model.parameters())].items()}

    images, words, masks = batch(cfg, 2)
    step([(images * float("nan"), words, masks)])  # step 2 diverges
    step([batch(cfg, 3)])  # a finite step after it must not move the weights either
    for k, v in model.state_dict().items():
        assert torch.equal(good[k], v), k
    for k, v in step.optimizer.state[next(model.parameters())].items():
        assert torch.equal(moments[k], v), k  # AdamW's moments and step count are untouched too
    with pytest.raises(Diverged) as err:
        step.check()
    assert err.value.step == 2
    assert err.value.value != err.value.value  # NaN


def test_the_log_window_is_the_mean_of_the_steps_losses():
    from restr.model.losses import restr_loss

    cfg, model, step = make_step()
    expected = []
    for s in range(3):
        b = batch(cfg, s)
        with torch.no_grad():
            out = model(b[0], b[1])
            expected.append(float(restr_loss(out.mask_logits, out.patch_logits, b[2], cfg.train.tau,
                                             cfg.train.lam)[0]))
        step([b])
    means, n = step.take_window()
    assert n == 3
    assert means[0] == pytest.approx(sum(expected) / 3, rel=1e-5)
    assert step.take_window() == ([0.0, 0.0, 0.0], 0)


def test_the_step_needs_fused_adamw():
    cfg = get_preset("smoke")
    model = build_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    sched = build_scheduler(opt, cfg.train)
    with pytest.raises(TypeError, match="fused AdamW"):
        TrainStep(model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), cfg.train, None, Dist())


@pytest.mark.parametrize("fusion", ["cme", "vme", "ime"])
def test_the_model_compiles_as_one_graph(fusion):
    """torch.compile(fullgraph=True) refuses any graph break, so a Python-side branch on a
    tensor value or an untraceable call in the forward fails here (traced, not code-generated,
    to stay fast on CPU)."""
    torch.manual_seed(0)
    cfg = get_preset("tiny").model
    cfg.fusion = fusion
    model = build_model(cfg)
    images, words, _ = batch(get_preset("tiny"), 0)
    ref = model(images, words)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    out = compiled(images, words)
    torch.testing.assert_close(out.mask_logits, ref.mask_logits)
    out.mask_logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_every_attention_layer_runs_through_sdpa(monkeypatch):
    """The fused kernels (flash, memory-efficient, cuDNN) are only reachable through
    F.scaled_dot_product_attention: the ViT (timm), language and fusion layers all call it."""
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("attn_mask") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    cfg = get_preset("tiny")
    m = cfg.model
    model = build_model(m)
    images, words, _ = batch(cfg, 0)
    model(images, words)
    assert len(calls) == m.vit_depth + m.lang_depth + m.fusion_layers
    # only the ViT runs unmasked (flash-eligible); language and fusion mask the padding
    assert calls.count(False) == m.vit_depth
