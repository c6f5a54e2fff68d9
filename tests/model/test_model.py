"""The model on the smoke preset: shapes, errors, gradients, sharing, seed attention, padding."""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from restr import ConfigError, get_preset
from restr.model import SelfAttention, build_model
from restr.model.vision import WeightsError, load_vit_weights

VARIANTS = [(f, s) for f in ("vme", "ime", "cme") for s in (False, True)]


def smoke(**model):
    return get_preset("smoke", model=model).model


def words_batch(cfg, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(len(lengths), cfg.max_words, dtype=torch.long)
    for i, n in enumerate(lengths):  # padded at the front, as the data layer does
        w[i, cfg.max_words - n:] = torch.randint(2, cfg.vocab_size, (n,), generator=g)
    return w


@pytest.mark.parametrize("fusion,shared", VARIANTS)
@pytest.mark.parametrize("hw", [(32, 32), (24, 48)])
def test_output_shapes(fusion, shared, hw):
    cfg = smoke(fusion=fusion, shared=shared)
    torch.manual_seed(0)
    model = build_model(cfg)
    out = model(torch.randn(3, 3, *hw), words_batch(cfg, [1, 7, 20]))
    assert out.mask_logits.shape == (3, 1, *hw)
    assert out.patch_logits.shape == (3, 1, hw[0] // 8, hw[1] // 8)
    assert out.seed_attention is None
    assert torch.isfinite(out.mask_logits).all()


def test_decoder_off_is_upsampled_patch_map():
    cfg = smoke(decoder=False)
    model = build_model(cfg)
    assert model.decoder is None
    out = model(torch.randn(2, 3, 32, 40), words_batch(cfg, [3, 4]))
    assert out.mask_logits.shape == (2, 1, 32, 40)
    # each pixel's logit lies within the range of the patch logits (bilinear interpolation)
    assert out.mask_logits.max() <= out.patch_logits.max() + 1e-5
    assert out.mask_logits.min() >= out.patch_logits.min() - 1e-5


@pytest.mark.parametrize("hw", [(30, 32), (32, 36), (7, 8)])
def test_non_multiple_sizes_are_refused(hw):
    cfg = smoke()
    model = build_model(cfg)
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        model(torch.randn(1, 3, *hw), words_batch(cfg, [2]))


def test_empty_expression_is_refused():
    cfg = smoke()
    model = build_model(cfg)
    w = words_batch(cfg, [3, 3])
    w[1] = 0
    with pytest.raises(ValueError, match="no words"):
        model(torch.randn(2, 3, 32, 32), w)


@pytest.mark.parametrize("fusion,shared", VARIANTS)
@pytest.mark.parametrize("head", ["paper", "release"])
def test_gradients_reach_every_parameter(fusion, shared, head):
    cfg = smoke(fusion=fusion, shared=shared, head=head)
    torch.manual_seed(1)
    model = build_model(cfg)
    images = torch.randn(2, 3, 32, 32)
    masks = (torch.rand(2, 32, 32) > 0.5).float()
    out = model(images, words_batch(cfg, [4, 9]))
    from restr.model.losses import restr_loss

    loss, _ = restr_loss(out.mask_logits, out.patch_logits, masks, tau=0.5, lam=0.1)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert silent == []


@pytest.mark.parametrize("fusion", ["vme", "ime", "cme"])
def test_sharing_keeps_one_block_per_sub_encoder(fusion):
    for layers in (2, 4, 6):
        plain = build_model(smoke(fusion=fusion, fusion_layers=layers))
        shared = build_model(smoke(fusion=fusion, fusion_layers=layers, shared=True))
        if fusion == "vme":
            assert len(plain.fusion.blocks) == layers and len(shared.fusion.blocks) == 1
        else:
            assert len(plain.fusion.vl_blocks) == layers // 2 and len(shared.fusion.vl_blocks) == 1
            assert len(plain.fusion.ls_blocks) == layers // 2 and len(shared.fusion.ls_blocks) == 1
        first = (plain.fusion.blocks if fusion == "vme" else plain.fusion.vl_blocks)[0]
        per_block = sum(p.numel() for p in first.parameters())
        extra = sum(p.numel() for p in [plain.fusion.seed, *plain.fusion.norm.parameters()])
        n_shared = 1 if fusion == "vme" else 2
        assert sum(p.numel() for p in shared.fusion.parameters()) == n_shared * per_block + extra
        assert sum(p.numel() for p in plain.fusion.parameters()) == layers * per_block + extra


def test_image_index_encodes_each_image_once_with_the_same_result():
    cfg = smoke(fusion="cme", fusion_layers=2)
    model = build_model(cfg).double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    index = torch.tensor([0, 1, 1, 0, 1])
    words = words_batch(cfg, [3, 7, 12, 5, 9])
    seen = []
    model.vision.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    shared = model(images, words, index)
    flat = model(images[index], words)
    assert seen == [2, 5]  # two images encoded once each, then five copies
    torch.testing.assert_close(shared.mask_logits, flat.mask_logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(shared.patch_logits, flat.patch_logits, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="image_index"):
        model(images, words, index[:3])


def test_shared_block_really_is_reused():
    cfg = smoke(fusion="cme", fusion_layers=4, shared=True)
    model = build_model(cfg)
    calls = []
    model.fusion.vl_blocks[0].register_forward_hook(lambda *a: calls.append("vl"))
    model.fusion.ls_blocks[0].register_forward_hook(lambda *a: calls.append("ls"))
    model(torch.randn(1, 3, 32, 32), words_batch(cfg, [5]))
    assert calls == ["vl", "vl", "ls", "ls"]


def test_vme_seed_attention_sums_to_one_in_every_layer():
    cfg = smoke(fusion="vme", fusion_layers=3)
    model = build_model(cfg)
    out = model(torch.randn(2, 3, 32, 48), words_batch(cfg, [2, 20]), return_attention=True)
    assert [a.layer for a in out.seed_attention] == [1, 2, 3]
    for a in out.seed_attention:
        assert a.weights.shape == (2, 4 * 6 + 20 + 1)
        torch.testing.assert_close(a.weights.sum(-1), torch.ones(2), atol=1e-5, rtol=0)
        assert (a.visual > 0).all()
        # padding words get no attention (first sample has 18 padding positions)
        assert (a.language[0, :18] == 0).all() and (a.language[0, 18:] > 0).all()


@pytest.mark.parametrize("fusion", ["ime", "cme"])
def test_seed_never_attends_to_visual_tokens_in_ime_and_cme(fusion):
    cfg = smoke(fusion=fusion, fusion_layers=4)
    model = build_model(cfg)
    out = model(torch.randn(2, 3, 32, 32), words_batch(cfg, [6, 11]), return_attention=True)
    assert [a.layer for a in out.seed_attention] == [3, 4]
    for a in out.seed_attention:
        assert torch.equal(a.visual, torch.zeros_like(a.visual))
        torch.testing.assert_close(a.weights.sum(-1), torch.ones(2), atol=1e-5, rtol=0)


def test_attention_weights_match_the_fused_kernel():
    torch.manual_seed(0)
    attn = SelfAttention(16, heads=1)
    x = torch.randn(2, 7, 16)
    key_mask = torch.tensor([[True] * 7, [False, False] + [True] * 5])
    out, w = attn(x, key_mask, query_index=6)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    row = (w[:, None, :] @ v)[:, 0]  # the query's output rebuilt from the returned weights
    torch.testing.assert_close(attn.proj(row), out[:, 6], atol=1e-5, rtol=1e-5)
    assert torch.equal(w[1, :2], torch.zeros(2))


def test_attention_weights_cost_nothing_unless_asked():
    cfg = smoke()
    model = build_model(cfg)
    out = model(torch.randn(1, 3, 32, 32), words_batch(cfg, [4]))
    assert out.seed_attention is None


@pytest.mark.parametrize("fusion", ["vme", "ime", "cme"])
def test_padding_does_not_change_the_prediction(fusion):
    cfg = smoke(fusion=fusion)
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    images = torch.randn(1, 3, 32, 32)
    ids = torch.tensor([5, 17, 3, 40, 9])
    long = torch.zeros(1, 20, dtype=torch.long)
    long[0, -5:] = ids
    short = torch.zeros(1, 8, dtype=torch.long)
    short[0, -5:] = ids
    exact = ids[None]
    with torch.no_grad():
        a, b, c = (model(images, w).mask_logits for w in (long, short, exact))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_release_padding_form_does_depend_on_padding():
    """The control for the test above: without masks, padding leaks into the output."""
    cfg = smoke(mask_padding=False)
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    images = torch.randn(1, 3, 32, 32)
    long = torch.zeros(1, 20, dtype=torch.long)
    long[0, -5:] = torch.tensor([5, 17, 3, 40, 9])
    with torch.no_grad():
        a = model(images, long).mask_logits
        b = model(images, long[:, -8:]).mask_logits
    assert not torch.allclose(a, b, atol=1e-4)


def test_too_many_words_are_refused():
    cfg = smoke()
    model = build_model(cfg)
    with pytest.raises(ValueError, match="max_words=20"):
        model(torch.randn(1, 3, 32, 32), torch.ones(1, 21, dtype=torch.long))


def test_word_vectors_initialise_the_embedding():
    cfg = smoke()
    vectors = torch.randn(cfg.vocab_size, cfg.word_dim)
    model = build_model(cfg, word_vectors=vectors.numpy())
    assert torch.equal(model.language.embed.weight[1:], vectors[1:])
    assert torch.equal(model.language.embed.weight[0], torch.zeros(cfg.word_dim))
    with pytest.raises(ValueError, match=r"\(vocab_size, word_dim\) = \(64, 50\)"):
        build_model(cfg, word_vectors=torch.randn(10, 50))


@pytest.mark.parametrize("block", ["pre", "post"])
@pytest.mark.parametrize("lang_out_proj", [False, True])
def test_language_options(block, lang_out_proj):
    cfg = smoke(lang_block=block, lang_out_proj=lang_out_proj, lang_mlp=200)
    model = build_model(cfg)
    assert model.language.blocks[0].mlp.fc1.out_features == 200
    assert model.language.blocks[0].style == block
    out = model(torch.randn(1, 3, 32, 32), words_batch(cfg, [3]))
    assert out.mask_logits.shape == (1, 1, 32, 32)


def test_release_head_has_its_two_matrices():
    paper = build_model(smoke(head="paper"))
    release = build_model(smoke(head="release"))
    d = paper.cfg.dim
    extra = sum(p.numel() for p in release.head.parameters())
    assert sum(p.numel() for p in paper.head.parameters()) == 0 and extra == 2 * d * d


def test_decoder_blocks_follow_the_patch_size():
    for p, k in [(4, 2), (8, 3), (16, 4)]:
        cfg = get_preset("smoke", model={"patch_size": p, "image_size": 4 * p}).model
        model = build_model(cfg)
        assert len(model.decoder.blocks) == k
        d = cfg.dim
        assert [(b.in_features, b.out_features) for b in model.decoder.blocks] == [
            (2 * d >> i, d >> i) for i in range(k)
        ]
        assert all(b.bias is None for b in model.decoder.blocks) and model.decoder.out.bias is None


# --- configuration -------------------------------------------------------------------


def test_unknown_preset_and_fields_are_named():
    with pytest.raises(ConfigError, match="unknown preset 'papr'.*paper, tiny, smoke"):
        get_preset("papr")
    with pytest.raises(ConfigError, match="unknown field model.fuson"):
        get_preset("smoke", model={"fuson": "vme"})
    with pytest.raises(ConfigError, match="model.fusion = 'xme'"):
        get_preset("smoke", model={"fusion": "xme"})
    with pytest.raises(ConfigError, match="even number"):
        get_preset("smoke", model={"fusion": "cme", "fusion_layers": 3})
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        get_preset("smoke", model={"image_size": 36})


def test_override_from_strings_and_diff():
    base = get_preset("tiny")
    new = base.override({"model.fusion": "vme", "model.shared": "true", "train.lr": "3e-4",
                         "model.image_size": "[64, 96]"})
    assert new.model.fusion == "vme" and new.model.shared is True and new.train.lr == 3e-4
    assert new.model.image_hw == (64, 96)
    assert base.model.fusion == "cme"  # the original is untouched
    assert set(base.diff(new)) == {
        "model.fusion: 'cme' != 'vme'", "model.shared: False != True", "train.lr: 0.001 != 0.0003",
        "model.image_size: 64 != [64, 96]",
    }
    assert base.run_key() != new.run_key() and base.run_key() == get_preset("tiny").run_key()


# --- ViT weights from a local file ---------------------------------------------------


def _vit_state(cfg, image_size):
    other = get_preset("smoke", model={"image_size": image_size}).model
    torch.manual_seed(3)
    return build_model(other).vision.vit.state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_vit_weights_load_and_resize_position_embeddings(tmp_path, suffix):
    cfg = smoke()
    state = _vit_state(cfg, 64)  # trained at 64x64: an 8x8 grid; the model uses 4x4
    state["head.weight"] = torch.randn(10, cfg.vit_dim)  # classifier heads are ignored
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"model": state}, path)
    model = build_model(get_preset("smoke", model={"vit_weights": str(path)}).model)
    vit = model.vision.vit
    assert torch.equal(vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert vit.pos_embed.shape == (1, 1 + 16, cfg.vit_dim)
    assert torch.equal(vit.pos_embed[:, 0], state["pos_embed"][:, 0])  # class token position kept


def test_missing_and_mismatched_vit_weights_are_named(tmp_path):
    with pytest.raises(WeightsError, match="not found: .*nothere.pth"):
        build_model(get_preset("smoke", model={"vit_weights": str(tmp_path / "nothere.pth")}).model)
    state = _vit_state(smoke(), 32)
    del state["blocks.0.norm1.weight"]
    state["blocks.0.extra"] = torch.zeros(3)
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(5, 5)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsError) as info:
        build_model(get_preset("smoke", model={"vit_weights": str(bad)}).model)
    text = str(info.value)
    assert "bad.pth" in text and "missing keys: blocks.0.norm1.weight" in text
    assert "unexpected keys: blocks.0.extra" in text and "blocks.0.mlp.fc1.weight (file (5, 5)" in text
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read ViT weights file .*garbage.pth"):
        load_vit_weights(build_model(smoke()).vision.vit, str(garbage))


def test_fusion_input_projections_start_at_unit_scale():
    """Unit-norm inputs through the projections give features of std ~proj_init_std, not ~bias-sized."""
    torch.manual_seed(0)
    model = build_model(get_preset("tiny", model={"vocab_size": 64}).model)
    x = torch.nn.functional.normalize(torch.randn(4096, model.vision.dim), dim=-1)
    out = model.vis_proj(x)
    assert out.std().item() == pytest.approx(1.0, rel=0.05)
    assert torch.equal(model.vis_proj.bias, torch.zeros_like(model.vis_proj.bias))
    default = build_model(get_preset("tiny", model={"vocab_size": 64, "proj_init_std": None}).model)
    assert default.vis_proj(x).std().item() < 0.2  # PyTorch's default init: a much smaller signal


# --- the position embeddings' start (model.vit_pos_init) ---------------------------------


def test_sincos_table_matches_its_formula_and_is_near_for_near_patches():
    from restr.model.vision import sincos_2d

    table = sincos_2d((3, 5), 8).double()  # 3 rows x 5 columns, 2 frequencies per quarter
    assert table.shape == (15, 8)
    row, col = 2, 3  # the patch at row 2, column 3 is number 2 * 5 + 3
    freqs = [1.0, 1.0 / 100.0]  # 1 / 10000^(k / 2), k = 0, 1
    expected = ([math.sin(col * f) for f in freqs] + [math.cos(col * f) for f in freqs]
                + [math.sin(row * f) for f in freqs] + [math.cos(row * f) for f in freqs])
    assert torch.allclose(table[13], torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    big = sincos_2d((8, 8), 128)
    dist_1 = torch.dist(big[0], big[1])  # neighbours on a row
    dist_7 = torch.dist(big[0], big[7])  # ends of the row
    assert dist_1 < dist_7
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d((2, 2), 6)


def test_position_structure_tells_a_grid_table_from_a_random_one():
    from restr.model.vision import position_structure, sincos_2d

    torch.manual_seed(0)
    assert position_structure(sincos_2d((8, 8), 128), (8, 8)) > 0.5
    assert abs(position_structure(0.02 * torch.randn(1, 65, 128), (8, 8))) < 0.1  # class token first, dropped
    shuffled = sincos_2d((8, 8), 128)[torch.randperm(64)]  # the same vectors at the wrong places
    assert abs(position_structure(shuffled, (8, 8))) < 0.2


def test_the_position_start_applies_without_weights_and_loaded_weights_replace_it(tmp_path):
    from safetensors.torch import save_file

    from restr.model.vision import sincos_2d

    cfg = get_preset("smoke", model={"vit_pos_init": "sincos"}).model
    vit = build_model(cfg).vision.vit
    grid = tuple(vit.patch_embed.grid_size)
    assert torch.equal(vit.pos_embed[0, 1:], sincos_2d(grid, cfg.vit_dim))
    assert torch.count_nonzero(vit.pos_embed[0, 0]) == 0
    assert vit.pos_embed.requires_grad  # learned from there
    default = build_model(get_preset("smoke").model).vision.vit
    assert default.pos_embed.std() < 0.05  # timm's random init (std 0.02)

    state = _vit_state(cfg, cfg.image_size)  # the same grid, random positions
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "vit.safetensors"))
    loaded = build_model(get_preset("smoke", model={"vit_pos_init": "sincos",
                                                    "vit_weights": str(tmp_path / "vit.safetensors")}).model)
    assert torch.equal(loaded.vision.vit.pos_embed, state["pos_embed"])
    with pytest.raises(ConfigError, match="vit_pos_init"):
        get_preset("smoke", model={"vit_pos_init": "learned"})


def test_a_late_field_at_its_former_value_keeps_the_run_key():
    # run keys of configs written before model.vit_pos_init existed stay what they were
    base = get_preset("tiny", model={"vit_pos_init": "random"})  # the former value (the quick zoo's)
    d = base.to_dict()
    del d["model"]["vit_pos_init"]
    payload = json.dumps({k: d[k] for k in ("model", "data", "train")}, sort_keys=True)
    assert base.run_key() == hashlib.sha256(payload.encode()).hexdigest()[:12]
    assert base.override({"model.vit_pos_init": "sincos"}).run_key() != base.run_key()
