"""The `release` preset and each of its options, on small models with hand-made weights.

The preset itself was compared with the authors' code (their timm 0.6.11 / PyTorch 1.13.1
environment, outside this repository): same weights, pixel and patch logits equal to
float64 rounding. These tests pin each option's effect, and re-state the release's
forward pass independently (``release_reference``) so the whole preset is checked too.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from restr import ConfigError, get_preset
from restr.config import RELEASE_OVERRIDES
from restr.engine.optim import lr_factor
from restr.model import build_model, sinusoidal_positions
from restr.model.decoder import PatchHead
from restr.model.losses import loss_settings, patch_labels
from restr.model.release import from_release_state_dict
from restr.model.vision import resize_pos_embed


def smoke(**model):
    return get_preset("smoke", model=model).model


def release_smoke(**model):
    """The release's forms on the smoke preset's sizes."""
    over = {k.split(".", 1)[1]: v for k, v in RELEASE_OVERRIDES.items() if k.startswith("model.")}
    over.pop("lang_mlp")  # the smoke preset's own width
    return smoke(**{**over, **model})


def words_batch(cfg, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(len(lengths), cfg.max_words, dtype=torch.long)
    for i, n in enumerate(lengths):
        w[i, cfg.max_words - n:] = torch.randint(2, cfg.vocab_size, (n,), generator=g)
    return w


# --- the preset ----------------------------------------------------------------------------


def test_release_preset_is_the_paper_preset_with_the_release_forms():
    paper, release = get_preset("paper"), get_preset("release")
    changed = {line.split(":", 1)[0] for line in paper.diff(release)}
    assert changed == set(RELEASE_OVERRIDES)
    assert release.preset == "release" and release.model.vit_weights == "timm"
    assert release.model.vit_name == "vit_base_patch16_384.augreg_in21k_ft_in1k"
    with pytest.raises(ConfigError, match="patch_label"):
        get_preset("release", train={"patch_label": "max"})
    with pytest.raises(ConfigError, match="fusion_out_norm"):
        get_preset("release", model={"fusion_out_norm": "visual"})


# --- Eq. (9)-(10) ---------------------------------------------------------------------------


def test_release_head_multiplies_the_projected_features_by_the_raw_logit():
    cfg = smoke(head="release", dim=4, fusion_heads=1, patch_size=2)
    head = PatchHead(cfg).double()
    with torch.no_grad():
        head.patch_proj.copy_(torch.diag(torch.tensor([2.0, 1.0, 0.0, -1.0], dtype=torch.float64)))
        head.class_proj.copy_(torch.eye(4, dtype=torch.float64) * 3)
        head.patch_proj[0, 1] = 1.0  # W_p is right-multiplied: row 0 of z feeds column 1
    z = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)  # (1, 2, 4)
    e = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    logits, masked = head(z, e)
    zp = torch.tensor([[2.0, 3.0, 0.0, -4.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)  # z W_p by hand
    c = torch.tensor([3.0, 3.0, 3.0, 3.0], dtype=torch.float64)
    expected = zp @ c  # (1*2 ... ) = [3, 3]: no 1/sqrt(D)
    assert torch.equal(logits[0], expected)
    assert torch.equal(masked[0], zp * expected[:, None])  # projected features x raw logit


def test_paper_head_is_eq_9_and_10():
    head = PatchHead(smoke(head="paper", dim=4, fusion_heads=1, patch_size=2)).double()
    z = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 0.0, 0.0]]], dtype=torch.float64)
    e = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    logits, masked = head(z, e)
    expected = torch.tensor([5.0, -0.5], dtype=torch.float64) / 2  # z e^T / sqrt(4)
    torch.testing.assert_close(logits[0], expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(masked[0], z[0] * torch.sigmoid(expected)[:, None], rtol=0, atol=1e-15)
    assert list(head.parameters()) == []


# --- the fusion encoder's output LayerNorm --------------------------------------------------


@pytest.mark.parametrize("which", ["both", "seed"])
def test_fusion_out_norm_leaves_the_patch_features_unnormalised_only_in_the_release_form(which):
    cfg = smoke(fusion="cme", fusion_layers=2, fusion_out_norm=which)
    torch.manual_seed(0)
    fusion = build_model(cfg).fusion.double().eval()
    with torch.no_grad():
        fusion.norm.weight.fill_(2.0)
        fusion.norm.bias.fill_(0.5)
    visual = torch.randn(2, 5, cfg.dim, dtype=torch.float64)
    words = torch.randn(2, 3, cfg.dim, dtype=torch.float64)
    seen = {}
    fusion.vl_blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("vl", o[0]))
    fusion.ls_blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("ls", o[0]))
    z_v, e_s, _ = fusion(visual, words)
    raw_v, raw_s = seen["vl"][:, :5], seen["ls"][:, -1]
    ln = lambda x: F.layer_norm(x, (cfg.dim,), fusion.norm.weight, fusion.norm.bias, cfg.norm_eps)  # noqa: E731
    torch.testing.assert_close(e_s, ln(raw_s), rtol=0, atol=1e-12)  # the classifier is normalised either way
    torch.testing.assert_close(z_v, ln(raw_v) if which == "both" else raw_v, rtol=0, atol=1e-12)


# --- patch labels and the loss --------------------------------------------------------------


def test_patch_label_rules_on_a_constructed_mask():
    mask = torch.zeros(1, 16, 16)
    mask[0, 3, 5] = 1  # patch (0, 0): one pixel of 64
    mask[0, 0:5, 8:16] = 1  # patch (0, 1): 40 of 64 = 0.625
    mask[0, 8:16, 0:8] = 1  # patch (1, 0): all 64
    # patch (1, 1): empty
    mean_08 = patch_labels(mask, 8, tau=0.8, rule="mean")[0, 0]
    mean_05 = patch_labels(mask, 8, tau=0.5, rule="mean")[0, 0]
    sum_08 = patch_labels(mask, 8, tau=0.8, rule="sum")[0, 0]
    sum_40 = patch_labels(mask, 8, tau=40, rule="sum")[0, 0]  # strictly above: 40 pixels is not enough
    assert mean_08.tolist() == [[0, 0], [1, 0]]
    assert mean_05.tolist() == [[0, 1], [1, 0]]
    assert sum_08.tolist() == [[1, 1], [1, 0]]  # the release: any pixel of the target
    assert sum_40.tolist() == [[0, 0], [1, 0]]
    with pytest.raises(ValueError, match="rule"):
        patch_labels(mask, 8, rule="any")


def test_loss_settings_follow_the_config():
    paper, release = get_preset("paper").train, get_preset("release").train
    assert loss_settings(paper, decoder=True) == {"tau": 0.8, "lam": 0.1, "rule": "mean"}
    assert loss_settings(paper, decoder=False) == {"tau": 0.8, "lam": 0.1, "rule": "mean"}
    assert loss_settings(release, decoder=True) == {"tau": 0.8, "lam": 0.1, "rule": "sum"}
    assert loss_settings(release, decoder=False) == {"tau": 0.8, "lam": 0.0, "rule": "sum"}


def test_release_decay_stops_one_step_short_of_the_end_rate():
    T, W = 100, 10
    ours = [lr_factor(s, T, W, 0.9, 0.0) for s in range(T)]
    rel = [lr_factor(s, T, W, 0.9, 0.0, to_last_step=False) for s in range(T)]
    assert ours[:W + 1] == rel[:W + 1] and ours[W] == 1.0
    assert ours[-1] == 0.0 and rel[-1] == pytest.approx((1 / (T - W)) ** 0.9, rel=1e-12)
    assert rel[50] == pytest.approx((1 - 40 / 90) ** 0.9, rel=1e-12)


# --- LayerNorm eps, stochastic depth, initialisation ---------------------------------------


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_norm_eps_reaches_every_layernorm_the_vit_included(eps):
    model = build_model(release_smoke(norm_eps=eps))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    # ViT: 2 per block + final; language (post-norm): 2 per block + the output projection's;
    # fusion: 2 per block + the output norm
    cfg = model.cfg
    assert len(norms) == (2 * cfg.vit_depth + 1) + (2 * cfg.lang_depth + 1) + (2 * cfg.fusion_layers + 1)
    assert {m.eps for m in norms} == {eps}


def test_drop_path_ramps_over_the_vit_and_each_fusion_sub_encoder():
    cfg = smoke(vit_depth=3, fusion="cme", fusion_layers=6, drop_path=0.1)
    model = build_model(cfg)
    vit = [b.drop_path1.drop_prob if hasattr(b.drop_path1, "drop_prob") else 0.0 for b in model.vision.vit.blocks]
    assert vit == pytest.approx([0.0, 0.05, 0.1])
    assert [b.drop_path for b in model.fusion.vl_blocks] == pytest.approx([0.0, 0.05, 0.1])
    assert [b.drop_path for b in model.fusion.ls_blocks] == pytest.approx([0.0, 0.05, 0.1])
    assert all(b.drop_path == 0.0 for b in model.language.blocks)
    shared = build_model(smoke(fusion="cme", fusion_layers=4, shared=True, drop_path=0.1))
    assert [b.drop_path for b in shared.fusion.vl_blocks] == [0.0]  # one block: linspace(0, r, 1) = [0]
    vme = build_model(smoke(fusion="vme", fusion_layers=3, drop_path=0.2))
    assert [b.drop_path for b in vme.fusion.blocks] == pytest.approx([0.0, 0.1, 0.2])
    # training draws per-sample masks; evaluation is deterministic
    images, words = torch.randn(4, 3, 32, 32), words_batch(cfg, [3, 5, 7, 9])
    model.eval()
    with torch.no_grad():
        a, b = model(images, words).mask_logits, model(images, words).mask_logits
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c = model(images, words).mask_logits
    assert not torch.allclose(a, c)


def test_release_init():
    cfg = get_preset("tiny", model={"init": "release", "head": "release", "proj_init_std": None,
                                    "vocab_size": 64}).model
    torch.manual_seed(0)
    model = build_model(cfg)
    d = cfg.dim
    fc = model.fusion.vl_blocks[0].mlp.fc1
    assert fc.weight.std().item() == pytest.approx(0.02, rel=0.05) and torch.equal(fc.bias, torch.zeros_like(fc.bias))
    lang = model.language.blocks[0].attn.qkv
    assert lang.weight.std().item() == pytest.approx(0.02, rel=0.05) and not lang.bias.any()
    assert model.vis_proj.weight.std().item() == pytest.approx(0.02, rel=0.05) and not model.vis_proj.bias.any()
    for w in (model.head.patch_proj, model.head.class_proj):
        assert w.std().item() == pytest.approx(d ** -0.5, rel=0.05)
    dec = model.decoder.blocks[0].weight  # xavier-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    bound = math.sqrt(6 / (dec.shape[0] + dec.shape[1]))
    assert dec.abs().max().item() <= bound and dec.abs().max().item() > 0.95 * bound
    patch = model.vision.vit.patch_embed.proj.weight
    fan_in, fan_out = patch.shape[1] * patch.shape[2] * patch.shape[3], patch.shape[0] * patch.shape[2] * patch.shape[3]
    assert patch.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    assert model.vision.vit.cls_token.std().item() == pytest.approx(0.02, rel=0.25)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)
    # the default keeps PyTorch's init: uniform in +-1/sqrt(fan_in), biases too
    default = build_model(get_preset("tiny", model={"vocab_size": 64}).model)
    fc = default.fusion.vl_blocks[0].mlp.fc1
    assert fc.bias.any() and fc.weight.abs().max().item() <= 1 / math.sqrt(fc.in_features)


def test_pytorch_default_projection_gives_w_x_and_bias_the_same_spread():
    """The prose's claim (config.py, fidelity page): at fan_in = 128, W x and b both have std 1/sqrt(3 * 128)."""
    torch.manual_seed(0)
    model = build_model(get_preset("tiny", model={"vocab_size": 64, "proj_init_std": None}).model)
    x = F.normalize(torch.randn(8192, model.vision.dim), dim=-1)
    with torch.no_grad():
        wx = x @ model.vis_proj.weight.T
    expected = 1 / math.sqrt(3 * 128)  # 0.051
    assert wx.std().item() == pytest.approx(expected, rel=0.05)
    assert model.vis_proj.bias.std().item() == pytest.approx(expected, rel=0.15)  # 128 values


def test_proj_init_std_takes_precedence_over_the_scheme():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny", model={"init": "release", "proj_init_std": 1.0, "vocab_size": 64}).model)
    assert model.vis_proj.weight.std().item() == pytest.approx(1.0, rel=0.05)


# --- language positions, upsampling, position-embedding resizing ---------------------------


def test_release_position_table_is_computed_in_float32():
    n, dim = 20, 300
    t64, t32 = sinusoidal_positions(n, dim), sinusoidal_positions(n, dim, "float32")
    pos = torch.arange(n).float()[:, None]  # the release's arithmetic, written out
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    expected = torch.zeros(n, dim)
    expected[:, 0::2], expected[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    assert torch.equal(t32, expected)
    assert not torch.equal(t32, t64)
    assert (t32 - t64).abs().max().item() < 1e-5  # a few float32 ulps of arguments up to 19


def test_upsample_align_corners_without_the_decoder():
    outs = {}
    for corners in (False, True):
        cfg = smoke(decoder=False, upsample_align_corners=corners)
        torch.manual_seed(0)
        model = build_model(cfg).double().eval()
        torch.manual_seed(1)
        out = model(torch.randn(1, 3, 32, 32, dtype=torch.float64), words_batch(cfg, [4]))
        expected = F.interpolate(out.patch_logits, size=(32, 32), mode="bilinear", align_corners=corners)
        torch.testing.assert_close(out.mask_logits, expected, rtol=0, atol=0)
        outs[corners] = out
    patch = outs[True].patch_logits[0, 0]
    assert torch.equal(patch, outs[False].patch_logits[0, 0])  # same weights, same patch map
    # align_corners=True: pixel x of 32 samples the 4-patch row at x * 3 / 31
    t = 3 / 31
    torch.testing.assert_close(outs[True].mask_logits[0, 0, 0, 1], patch[0, 0] * (1 - t) + patch[0, 1] * t,
                               rtol=0, atol=1e-12)
    assert not torch.allclose(outs[True].mask_logits, outs[False].mask_logits)


def test_position_embedding_resize_modes():
    g = torch.Generator().manual_seed(0)
    pe = torch.randn(1, 1 + 6 * 6, 8, generator=g)
    plain = resize_pos_embed(pe, (9, 9), 1, "bicubic")
    anti = resize_pos_embed(pe, (9, 9), 1, "bicubic_antialias")
    assert plain.shape == anti.shape == (1, 1 + 81, 8)
    assert torch.equal(plain[:, 0], pe[:, 0]) and torch.equal(anti[:, 0], pe[:, 0])  # class token kept
    grid = pe[0, 1:].reshape(1, 6, 6, 8).permute(0, 3, 1, 2)
    by_hand = F.interpolate(grid, size=(9, 9), mode="bicubic", align_corners=False)
    by_hand = by_hand.permute(0, 2, 3, 1).reshape(1, 81, 8)
    assert torch.equal(plain[:, 1:], by_hand)
    assert (plain - anti).abs().max().item() > 1e-2  # the two kernels differ (a = -0.75 vs -0.5)


def test_local_weights_use_the_configured_resize(tmp_path):
    torch.manual_seed(3)
    state = build_model(smoke(image_size=64)).vision.vit.state_dict()  # 8 x 8 grid
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    plain = build_model(smoke(vit_weights=str(path), vit_pos_resize="bicubic")).vision.vit.pos_embed
    anti = build_model(smoke(vit_weights=str(path))).vision.vit.pos_embed
    assert torch.equal(plain, resize_pos_embed(state["pos_embed"], (4, 4), 1, "bicubic"))
    assert torch.equal(anti, resize_pos_embed(state["pos_embed"], (4, 4), 1, "bicubic_antialias"))


# --- the whole release forward, re-stated from the authors' code ----------------------------


def _attention(x, qkv, proj, heads):
    B, N, C = x.shape
    q, k, v = (qkv(x).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4))
    a = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(-1)
    return proj((a @ v).transpose(1, 2).reshape(B, N, C))


def _pre_block(x, blk, heads, eps):
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], n.weight, n.bias, eps)  # noqa: E731
    x = x + _attention(ln(x, blk.norm1), blk.attn.qkv, blk.attn.proj, heads)
    return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(ln(x, blk.norm2))))


def release_reference(model, images, words):
    """The release's forward (model/vit.py, glove_transformer.py, fusion_module.py) written
    out with this model's weights: plain attention, post-norm language blocks, no masks."""
    cfg, eps = model.cfg, model.cfg.norm_eps
    vit = model.vision.vit
    x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
    x = torch.cat([vit.cls_token.expand(len(x), -1, -1), x], 1) + vit.pos_embed
    for blk in vit.blocks:
        x = _pre_block(x, blk, cfg.vit_heads, eps)
    x_v = F.layer_norm(x, x.shape[-1:], vit.norm.weight, vit.norm.bias, eps)[:, 1:]
    lang = model.language
    y = lang.embed(words) + sinusoidal_positions(cfg.max_words, cfg.word_dim, "float32").to(images.dtype)
    for blk in lang.blocks:  # LangBlock: LN(x + MSA(x)), LN(x + MLP(x))
        y = F.layer_norm(y + _attention(y, blk.attn.qkv, blk.attn.proj, cfg.lang_heads), y.shape[-1:],
                         blk.norm1.weight, blk.norm1.bias, eps)
        y = F.layer_norm(y + blk.mlp.fc2(F.gelu(blk.mlp.fc1(y))), y.shape[-1:], blk.norm2.weight, blk.norm2.bias, eps)
    lin, norm = lang.out_proj[0], lang.out_proj[1]
    x_l = F.layer_norm(lin(y), (cfg.dim,), norm.weight, norm.bias, eps)
    x_v = model.vis_proj(F.normalize(x_v, dim=2))
    x_l = model.lang_proj(F.normalize(x_l, dim=2))
    x_l = torch.where((words == 0)[..., None], torch.zeros_like(x_l), x_l)
    f = model.fusion
    z = torch.cat([x_v, x_l], 1)
    for _ in range(f.steps // len(f.vl_blocks)):
        for blk in f.vl_blocks:
            z = _pre_block(z, blk, cfg.fusion_heads, eps)
    patches, z_l = z[:, :-cfg.max_words], z[:, -cfg.max_words:]
    s = torch.cat([z_l, f.seed.expand(len(z), -1, -1)], 1)
    for _ in range(f.steps // len(f.ls_blocks)):
        for blk in f.ls_blocks:
            s = _pre_block(s, blk, cfg.fusion_heads, eps)
    cls = F.layer_norm(s, (cfg.dim,), f.norm.weight, f.norm.bias, eps)[:, -1:]
    patches, cls = patches @ model.head.patch_proj, cls @ model.head.class_proj
    patch_pred = torch.einsum("bpd,bwd->bpw", patches, cls)  # (B, N_v, 1)
    gh, gw = cfg.grid
    patch_map = patch_pred.transpose(1, 2).reshape(len(z), 1, gh, gw)
    if model.decoder is None:
        return F.interpolate(patch_map, size=cfg.image_hw, mode="bilinear", align_corners=True), patch_map
    m = torch.cat([x_v, patch_pred * patches], 2).transpose(1, 2).reshape(len(z), -1, gh, gw)
    for lin in model.decoder.blocks:
        m = F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=True)
        m = F.leaky_relu(F.conv2d(m, lin.weight[..., None, None]), cfg.leaky_slope)
    return F.conv2d(m, model.decoder.out.weight[..., None, None]), patch_map


@pytest.mark.parametrize("shared,decoder", [(False, True), (True, True), (False, False)])
def test_release_preset_computes_the_release_forward(shared, decoder):
    cfg = release_smoke(fusion_layers=4, shared=shared, decoder=decoder)
    torch.manual_seed(0)
    model = build_model(cfg).double().eval()
    with torch.no_grad():  # LayerNorms and biases away from their initial 1 and 0
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    words = words_batch(cfg, [3, 20])
    with torch.no_grad():
        out = model(images, words)
        pixel, patch = release_reference(model, images, words)
    # float64 rounding: the float32-computed position table alone moves these by ~1e-10
    torch.testing.assert_close(out.patch_logits, patch, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.mask_logits, pixel, rtol=1e-12, atol=1e-12)
    if decoder and not shared:  # the paper's forms on the same weights compute something else
        paper = build_model(smoke(**{**cfg.__dict__, "fusion_out_norm": "both", "mask_padding": True}))
        paper.load_state_dict(model.state_dict())
        with torch.no_grad():
            other = paper.double().eval()(images, words)
        assert not torch.allclose(other.mask_logits, pixel, atol=1e-3)


# --- the authors' checkpoints ---------------------------------------------------------------


def _release_names(cfg):
    """This package's parameter names in the release's spelling (the converter's inverse)."""
    k = cfg.decoder_blocks
    names = {"vision.vit.": "encoder_v.", "language.embed.weight": "encoder_l.embedding.weight",
             "language.blocks.": "encoder_l.blocks.", "language.out_proj.0.": "encoder_l.proj_lang.",
             "language.out_proj.1.": "encoder_l.lang_norm.", "vis_proj.": "fusion_module.proj_v.",
             "lang_proj.": "fusion_module.proj_l.", "fusion.seed": "fusion_module.seed_emb",
             "head.patch_proj": "fusion_module.proj_patch", "head.class_proj": "fusion_module.proj_cls",
             "fusion.vl_blocks.": "fusion_module.blocks_vl.", "fusion.ls_blocks.": "fusion_module.blocks_ls.",
             "fusion.norm.": "fusion_module.norm.", "decoder.out.weight": f"fusion_module.decoder.{k}.weight"}
    for i in range(k):
        names[f"decoder.blocks.{i}.weight"] = f"fusion_module.decoder.{i}.up.1.weight"
    return names


def test_release_checkpoints_convert_to_this_layout():
    cfg = release_smoke(fusion_layers=4)
    model = build_model(cfg)
    names = _release_names(cfg)
    theirs = {}
    for key, value in model.state_dict().items():
        prefix = next(p for p in sorted(names, key=len, reverse=True) if key.startswith(p))
        new = names[prefix] + key[len(prefix):]
        theirs[new] = value[..., None, None] if new.startswith("fusion_module.decoder.") else value  # 1 x 1 convs
    theirs["encoder_v.head.weight"] = torch.zeros(1000, cfg.vit_dim)  # their ViT keeps its classifier
    theirs["encoder_v.head.bias"] = torch.zeros(1000)
    converted = from_release_state_dict(theirs, cfg.decoder_blocks)
    assert converted.keys() == model.state_dict().keys()
    assert all(torch.equal(converted[k], v) for k, v in model.state_dict().items())
    with pytest.raises(KeyError, match="fusion_module.extra"):
        from_release_state_dict({**theirs, "fusion_module.extra": torch.zeros(1)})
