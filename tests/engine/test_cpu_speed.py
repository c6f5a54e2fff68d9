"""The CPU speed paths: bf16 (and its fallback), attention in bf16, expression groups
that share one image (same gradient as a flat batch), their sampler and data set."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restr.config import get_preset
from restr.data.groups import ExpressionGroups, GroupedSampler, collate_groups, expression_groups
from restr.data.refer import ReferDataset
from restr.model import build_model
from restr.model.attention import attention, cpu_bf16
from restr.model.losses import restr_loss
from restr.utils import cpu_has_fast_bf16, resolve_amp


def test_bf16_detection_reads_the_cpu_flags():
    assert cpu_has_fast_bf16("flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_fast_bf16("Features\t: fp asimd bf16 i8mm\n")  # Arm
    assert not cpu_has_fast_bf16("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")


def test_bf16_falls_back_to_fp32_with_one_notice(monkeypatch, capsys):
    import restr.utils.devices as U

    monkeypatch.setattr(U, "cpu_has_fast_bf16", lambda cpuinfo=None: False)
    monkeypatch.setattr(U, "_NOTICES", set())
    assert resolve_amp("bf16", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) is None
    err = capsys.readouterr().err
    assert err.count("notice:") == 1 and "fp32" in err
    monkeypatch.setattr(U, "cpu_has_fast_bf16", lambda cpuinfo=None: True)
    assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    assert resolve_amp("auto", torch.device("cpu")) is None  # auto stays fp32 on a CPU


@pytest.mark.parametrize("masked", [False, True])
def test_bf16_attention_matches_the_fused_kernel(masked):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 9, 16, generator=g) for _ in range(3))
    mask = (torch.rand(3, 1, 1, 9, generator=g) > 0.3) | (torch.arange(9) == 0) if masked else None
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert not cpu_bf16(q)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpu_bf16(q)
        out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.03)
    # the explicit path masks its logits in place: its gradients are still the kernel's
    weights = torch.randn(ref.shape, generator=g)
    for a, b in zip(torch.autograd.grad((out.float() * weights).sum(), (q, k, v)),
                    torch.autograd.grad((ref * weights).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)


def test_bf16_training_losses_stay_within_two_percent_of_fp32():
    cfg = get_preset("smoke")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=g)
    words = torch.randint(2, cfg.model.vocab_size, (4, cfg.model.max_words), generator=g)
    masks = (torch.rand(4, 32, 32, generator=g) > 0.6).float()
    losses = {}
    for amp in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = build_model(cfg.model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses[amp] = []
        for _ in range(5):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
                out = model(images, words)
            loss, _ = restr_loss(out.mask_logits, out.patch_logits, masks, 0.5, 1.0)
            losses[amp].append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert losses[torch.bfloat16] == pytest.approx(losses[None], rel=0.02)
    assert losses[torch.bfloat16] != losses[None]  # really computed in bf16


def test_a_group_gives_the_flat_batchs_gradient_in_float64():
    cfg = get_preset("smoke", model={"fusion": "cme", "fusion_layers": 2})
    torch.manual_seed(0)
    model = build_model(cfg.model).double()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    words = torch.randint(2, cfg.model.vocab_size, (6, cfg.model.max_words), generator=g)
    masks = (torch.rand(6, 32, 32, generator=g) > 0.6).double()

    def grads(out):
        model.zero_grad()
        restr_loss(out.mask_logits, out.patch_logits, masks, 0.5, 1.0)[0].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    grouped, flat = grads(model(images, words, index)), grads(model(images[index], words))
    for name in flat:
        torch.testing.assert_close(grouped[name], flat[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    from restr.data.synth import generate

    root = tmp_path_factory.mktemp("synthref")
    generate(root, seed=4, num_images=12, progress=False)
    return ReferDataset(root, "synthref", "unc", "train", image_size=32, augment=False, uint8=True)


def test_groups_hold_expressions_of_one_image_and_change_each_epoch(train_set):
    groups = expression_groups(train_set, 3, seed=0, epoch=0)
    assert all(len(g) == 3 for g in groups)
    for g in groups:
        assert len({train_set.item_ref(i)[0]["image_id"] for i in g}) == 1
    assert len({i for g in groups for i in g}) == 3 * len(groups)  # no expression twice
    assert groups == expression_groups(train_set, 3, seed=0, epoch=0)
    again = expression_groups(train_set, 3, seed=0, epoch=1)
    assert len(again) == len(groups) and again != groups


def test_grouped_sampler_resumes_and_splits_over_ranks(train_set):
    full = list(GroupedSampler(train_set, 3, global_batch=6, world=1, rank=0, seed=5))
    resumed = GroupedSampler(train_set, 3, global_batch=6, world=1, rank=0, seed=5)
    resumed.set_position(0, 1)
    assert list(resumed) == full[2:]  # one step = two groups of three
    r0 = list(GroupedSampler(train_set, 3, global_batch=6, world=2, rank=0, seed=5))
    r1 = list(GroupedSampler(train_set, 3, global_batch=6, world=2, rank=1, seed=5))
    assert [x for pair in zip(r0, r1) for x in pair] == full
    with pytest.raises(ValueError, match="multiple of"):
        GroupedSampler(train_set, 4, global_batch=6, world=1, rank=0, seed=5)


def test_a_group_item_is_its_expressions_flat_items_with_one_image(train_set):
    group = expression_groups(train_set, 3, seed=0, epoch=0)[0]
    batch = collate_groups([ExpressionGroups(train_set)[group]])
    assert batch["image"].shape == (1, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["image_index"].tolist() == [0, 0, 0]
    for row, i in enumerate(group):
        flat = train_set[i]
        assert torch.equal(batch["image"][0], flat["image"])
        assert torch.equal(batch["mask"][row], flat["mask"]) and torch.equal(batch["words"][row], flat["words"])


def test_the_paper_preset_is_untouched_by_the_cpu_recipe():
    t = get_preset("paper").train
    assert (t.batch_size, t.iterations, t.lr, t.vit_lr_scale, t.warmup, t.power) == (8, 400_000, 1e-5, 0.1, 0.1, 0.9)
    assert (t.tau, t.lam, t.weight_decay, t.amp, t.expressions_per_image, t.threads) == (0.8, 0.1, 5e-4, "auto", 1, 0)
    m = get_preset("paper").model
    assert (m.image_size, m.patch_size, m.dim, m.fusion, m.fusion_layers, m.decoder) == (480, 16, 768, "cme", 4, True)


def test_cpu_threads_leave_room_for_the_loader_and_for_others(monkeypatch):
    import os

    from restr.utils import cpu_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert cpu_threads(0) == 1 and cpu_threads(1) == 1 and cpu_threads(4) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert cpu_threads(1) == 8  # half the cores: the rest for the loader and whatever else runs
    assert cpu_threads(12) == 4  # the cores the loader workers leave
    assert cpu_threads(1, processes=4) == 2  # 4 processes share 16 cores


def test_the_decoder_computes_linear_after_upsampling_as_the_paper_draws_it():
    """The decoder runs each block's linear layer before the upsampling (cheaper); with
    bias-free per-pixel linears the result is the block as drawn, upsample then linear."""
    import torch.nn.functional as F

    cfg = get_preset("tiny").model
    decoder = build_model(cfg).decoder.double()
    x = torch.randn(2, 2 * cfg.dim, 4, 5, dtype=torch.float64, requires_grad=True)
    ref = x
    for linear in decoder.blocks:
        ref = F.interpolate(ref, scale_factor=2, mode="bilinear", align_corners=True)
        ref = decoder.act(linear(ref.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    ref = decoder.out(ref.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    out = decoder(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # and so are the gradients (the fast order applies its LeakyReLU in place)
    weights = torch.randn_like(out)
    params = [x, *decoder.parameters()]
    fast = torch.autograd.grad((out * weights).sum(), params)
    drawn = torch.autograd.grad((ref * weights).sum(), params)
    for a, b in zip(fast, drawn):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
