"""One optimiser step of ReSTR, with no host-device synchronisation in it.

The trainer (:mod:`restr.engine.trainer`) and the benchmark (``python -m restr bench``) both run
:class:`TrainStep`; :func:`build_train_step` assembles it the trainer's way: fused AdamW
with the paper's two lr groups (:mod:`restr.engine.optim`), the warm-up/poly schedule, a
GradScaler for fp16, and DistributedDataParallel under torchrun.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.distributed as dist

from ..config import TrainConfig
from .distributed import Dist
from ..model.losses import m3att_loss, restr_loss
from .optim import build_optimizer, build_scheduler
from ..utils.devices import resolve_amp


# the three loss parts a step logs, by model family (the middle one is the family's second term)
LOSS_PARTS = {"restr": ("loss", "loss_patch", "loss_pixel"), "m3att": ("loss", "loss_rec", "loss_pixel")}


class Diverged(Exception):
    """The loss was not finite at optimiser step ``step`` (``value`` is the first bad loss)."""

    def __init__(self, step: int, value: float):
        super().__init__(step)
        self.step, self.value = step, value


class TrainStep:
    """One optimiser step with no host-device synchronisation in it.

    Forward under autocast, Eq. (12), backward over the micro-batches (DDP's gradient
    all-reduce on the last one only), optional gradient clipping, fused AdamW, the lr
    schedule. Nothing in :meth:`__call__` reads a device value on the host, so on a GPU
    the CPU can queue the next steps while the current one runs:

    - the loss parts stay on the device and are summed into a log window there;
    - a non-finite loss sets a sticky flag on the device. The flag is fed to fused
      AdamW as its ``found_inf`` input, which makes the kernel skip the update, so from
      the first bad step on the weights stay those of the last good step;
    - the host reads the flag and the window only in :meth:`check` and
      :meth:`take_window` (one small copy each), which the trainer calls at log,
      validation and checkpoint steps. :meth:`check` raises :class:`Diverged` naming the
      first bad step, so a run never saves weights from after a non-finite loss.

    With fp16 autocast the GradScaler owns ``found_inf`` (it skips steps with inf
    gradients itself); the flag is still checked before anything is saved.
    ``python -m restr bench`` times this same step.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler,
                 t: TrainConfig, amp_dtype: torch.dtype | None, d: Dist, compile: bool = False):
        self.model = model  # the module to call (DDP-wrapped under torchrun)
        self.core = getattr(model, "module", model)
        self.fwd = torch.compile(model) if compile else model
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.t, self.amp_dtype, self.d = t, amp_dtype, d
        self.family = getattr(getattr(self.core, "cfg", None), "family", "restr")
        self.part_names = LOSS_PARTS[self.family]  # what the log window's three sums are
        if not scaler.is_enabled() and not all(g.get("fused") for g in optimizer.param_groups):
            raise TypeError("TrainStep needs a fused AdamW (restr.engine.optim.build_optimizer) to skip steps on the "
                            "device")
        dev = d.device
        self.step_count = torch.zeros((), dtype=torch.long, device=dev)  # steps done (set_step on resume)
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=dev)
        self.first_value = torch.zeros((), dtype=torch.float64, device=dev)
        self.window = torch.zeros(3, dtype=torch.float64, device=dev)  # sums of the three part_names
        self.window_steps = 0
        self.grad_norm: torch.Tensor | None = None
        self.lr: dict[str, float] = {}  # each group's lr in the last step, by group name

    @property
    def steps_done(self) -> torch.Tensor:
        return self.step_count

    def set_step(self, step: int) -> None:
        """Continue from optimiser step ``step`` (a resumed run)."""
        self.step_count.fill_(int(step))

    def load_window(self, saved: torch.Tensor) -> None:
        """Restore a checkpoint's ``log_window`` (3 sums, then the step count)."""
        self.window.copy_(saved[:3].to(self.window))
        self.window_steps = int(saved[3])

    def window_state(self) -> torch.Tensor:
        """The log window as a CPU float64 tensor (3 sums, step count), for a checkpoint."""
        return torch.cat([self.window.cpu(), torch.tensor([float(self.window_steps)], dtype=torch.float64)])

    def __call__(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        """One optimiser step over ``[(images, words, masks[, image_index]), ...]`` (one tuple
        per micro-batch; ``image_index`` maps expressions to images, see ReSTR.forward)."""
        t, d, n = self.t, self.d, len(micro_batches)
        self.lr = {g.get("name", str(k)): g["lr"] for k, g in enumerate(self.optimizer.param_groups)}
        parts = torch.zeros(3, dtype=torch.float64, device=d.device)
        for a, (images, words, masks, *index) in enumerate(micro_batches):
            sync = nullcontext() if (not d.enabled or a == n - 1) else self.model.no_sync()
            with sync:
                with torch.autocast(d.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    o = self.fwd(images, words, *index)  # index: each expression's image, if grouped
                loss, logs = self.loss(o, masks)
                self.scaler.scale(loss / n).backward()
            parts += torch.stack([logs[name] for name in self.part_names]).double()
        parts /= n
        if d.enabled:
            dist.all_reduce(parts)  # a NaN on any rank makes every rank's sum NaN
            parts /= d.world
        bad_now = ~torch.isfinite(parts).all()
        first = bad_now & ~self.bad
        self.first_bad = torch.where(first, self.step_count, self.first_bad)
        self.first_value = torch.where(first, parts[0], self.first_value)
        self.bad |= bad_now
        if t.grad_clip:
            if self.scaler.is_enabled():
                self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.core.parameters(), t.grad_clip)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            # fused AdamW skips the whole update (moments and step count too) when found_inf is 1
            self.optimizer.grad_scale, self.optimizer.found_inf = None, self.bad.float()
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.grad_scale, self.optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step_count += 1
        self.window += parts
        self.window_steps += 1

    def loss(self, o, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The family's loss: ReSTR's Eq. (12), or M3Att's Eq. (5) (mask BCE + w_rec x LFR)."""
        t = self.t
        if self.family == "m3att":
            return m3att_loss(o.mask_logits, o.reconstruction, masks, t.rec_weight)
        return restr_loss(o.mask_logits, o.patch_logits, masks, t.tau, t.lam)

    def check(self) -> None:
        """Read the divergence flag on the host (one sync); raise :class:`Diverged` if it is set."""
        flags = torch.stack([self.bad.double(), self.first_bad.double(), self.first_value]).cpu()
        if flags[0] > 0:
            raise Diverged(int(flags[1]), float(flags[2]))

    def take_window(self) -> tuple[list[float], int]:
        """The mean loss parts since the last call and the number of steps; resets the window."""
        sums, n = self.window.cpu().tolist(), self.window_steps
        self.window.zero_()
        self.window_steps = 0
        return [v / max(n, 1) for v in sums], n


def build_train_step(model: torch.nn.Module, t: TrainConfig, d: Dist) -> TrainStep:
    """The trainer's step for ``model`` (already on ``d.device``): fused AdamW over its two
    parameter groups, the lr schedule, a GradScaler (enabled for fp16 only), and the
    model wrapped in DistributedDataParallel when the distributed path is on."""
    amp_dtype = resolve_amp(t.amp, d.device)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp_dtype == torch.float16)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    return TrainStep(model, optimizer, scheduler, scaler, t, amp_dtype, d, compile=t.compile)
