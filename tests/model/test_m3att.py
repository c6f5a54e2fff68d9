"""M3Att (model.family = "m3att"): Eq. (1)-(2b), Eq. (3) and Eq. (4)-(5) against direct
computations in float64; shapes, gradients, padding; the trainer, resume and cost."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restr import ConfigError, get_preset
from restr.model import M3Att, build_model
from restr.model.losses import m3att_loss
from restr.model.m3att import LanguageReconstruction
from restr.model.mutual import IMIBlock, MutualAttention, TokenBatchNorm

ROOT = Path(__file__).resolve().parents[2]
EPS = 1e-5  # the batch norms' eps


def smoke(**model):
    return get_preset("smoke", model={"family": "m3att", **model}).model


def words_batch(cfg, lengths, seed=0, slots=None):
    g = torch.Generator().manual_seed(seed)
    slots = slots or cfg.max_words
    w = torch.zeros(len(lengths), slots, dtype=torch.long)
    for i, n in enumerate(lengths):  # padded at the front, as the data layer does
        w[i, slots - n:] = torch.randint(2, cfg.vocab_size, (n,), generator=g)
    return w


# ----------------------------------------------------------------------------------------
# direct computations on Python lists of floats (no tensor algebra)

def lin(vec, layer):
    """y_o = sum_i W[o][i] x_i + b_o."""
    W = layer.weight.tolist()
    b = layer.bias.tolist() if layer.bias is not None else [0.0] * len(W)
    return [sum(W[o][i] * vec[i] for i in range(len(vec))) + b[o] for o in range(len(W))]


def softmax(xs):
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    return [v / sum(e) for v in e]


def relu(vec):
    return [max(v, 0.0) for v in vec]


def batch_norm(rows, norm):
    """Training-mode batch norm of the listed rows (biased variance), the module's affine."""
    n, C = len(rows), len(rows[0])
    mean = [sum(r[c] for r in rows) / n for c in range(C)]
    var = [sum((r[c] - mean[c]) ** 2 for r in rows) / n for c in range(C)]
    g, b = norm.weight.tolist(), norm.bias.tolist()
    return [[(r[c] - mean[c]) / math.sqrt(var[c] + EPS) * g[c] + b[c] for c in range(C)] for r in rows]


def bn_relu_on_real(rows_per_b, mask, layer):
    """LinearBNReLU on every real word of a batch: {(b, i): output row}; padded rows 0."""
    keys = [(b, i) for b in range(len(mask)) for i in range(len(mask[b])) if mask[b][i]]
    normed = batch_norm([lin(rows_per_b[b][i], layer.linear) for b, i in keys], layer.norm)
    return {k: relu(r) for k, r in zip(keys, normed)}


def randomise_norms(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, TokenBatchNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))


B, NT, HW, C = 2, 5, 6, 4
MASK = [[False, False, True, True, True], [True] * NT]  # expression 0 has 3 words (front padding)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    lang = torch.randn(B, NT, C, generator=g, dtype=torch.float64)
    vis = torch.randn(B, HW, C, generator=g, dtype=torch.float64)
    return lang, vis, torch.tensor(MASK)


def direct_mutual(module, lang, vis, setting):
    """Eq. (1)-(2b) and F_mul for one batch, written out element by element."""
    out = {"a": [], "a_val": [], "lav": [], "val": [], "fused": []}
    for b in range(B):
        L, V = lang[b].tolist(), vis[b].tolist()
        kl = [lin(x, module.lang_key) for x in L]
        kv, vv = [lin(x, module.vis_key) for x in V], [lin(x, module.vis_value) for x in V]
        a = [[sum(kl[i][c] * kv[p][c] for c in range(C)) / math.sqrt(C) for p in range(HW)] for i in range(NT)]
        lav = []
        for i in range(NT):  # Eq. (2a): softmax along HW
            w = softmax(a[i])
            lav.append([sum(w[p] * vv[p][c] for p in range(HW)) for c in range(C)])
        out["a"].append(a)
        out["lav"].append(lav)
        if setting == "generic":
            continue
        a_val = a
        if setting == "independent":
            k2, v2 = [lin(x, module.lang_key_val) for x in L], [lin(x, module.vis_key_val) for x in V]
            a_val = [[sum(k2[i][c] * v2[p][c] for c in range(C)) / math.sqrt(C) for p in range(HW)]
                     for i in range(NT)]
        vl = [lin(x, module.lang_value) for x in L]
        real = [i for i in range(NT) if MASK[b][i]]
        val = []
        for p in range(HW):  # Eq. (2b): softmax along the (real) words
            w = softmax([a_val[i][p] for i in real])
            val.append([sum(wi * vl[i][c] for wi, i in zip(w, real)) for c in range(C)])
        out["a_val"].append(a_val)
        out["val"].append(val)
        out["fused"].append([[sum(lav[i][c] * val[p][c] for c in range(C)) for p in range(HW)] for i in range(NT)])
    return out


@pytest.mark.parametrize("setting", ["shared", "independent", "generic"])
def test_mutual_attention_is_eq_1_to_2b(setting):
    torch.manual_seed(3)
    module = MutualAttention(C, HW, setting).double().train()
    randomise_norms(module)
    lang, vis, mask = inputs()
    out, parts = module(lang, vis, mask)
    want = direct_mutual(module, lang, vis, setting)
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(parts.a_mut, t(want["a"]), rtol=0, atol=1e-12)
    torch.testing.assert_close(parts.lav, t(want["lav"]), rtol=0, atol=1e-12)
    if setting == "generic":
        assert parts.val is None and parts.val_weights is None
        features = want["lav"]  # LAV alone, then the linear layer C -> C
    else:
        torch.testing.assert_close(parts.a_val, t(want["a_val"]), rtol=0, atol=1e-12)
        torch.testing.assert_close(parts.val, t(want["val"]), rtol=0, atol=1e-12)
        torch.testing.assert_close(parts.fused, t(want["fused"]), rtol=0, atol=1e-12)
        assert (setting == "shared") == torch.equal(parts.a_val, parts.a_mut)
        features = want["fused"]  # F_mul: HW channels -> C
    # the output: linear, batch norm over the real words, ReLU; padded words 0
    rows = bn_relu_on_real(features, MASK, module.out)
    expected = [[rows.get((b, i), [0.0] * C) for i in range(NT)] for b in range(B)]
    torch.testing.assert_close(out, t(expected), rtol=0, atol=1e-10)


def test_the_attention_weights_are_normalised_along_both_axes():
    module = MutualAttention(C, HW, "shared").double()
    lang, vis, mask = inputs(1)
    _, parts = module(lang, vis, mask)
    torch.testing.assert_close(parts.lav_weights.sum(-1), torch.ones(B, NT, dtype=torch.float64))
    torch.testing.assert_close(parts.val_weights.sum(-1), torch.ones(B, HW, dtype=torch.float64))
    assert torch.all(parts.val_weights[0, :, :2] == 0)  # no pixel attends to padding


def test_token_batch_norm_is_batch_norm_over_the_real_words():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    mask = torch.rand(3, 7) > 0.4
    mask[:, -1] = True
    ours, ref = TokenBatchNorm(5).double(), torch.nn.BatchNorm1d(5, eps=EPS).double()
    randomise_norms(ours)
    ref.load_state_dict(ours.state_dict())
    for _ in range(2):  # twice: the running statistics move the same way
        y = ours(x, mask)
        torch.testing.assert_close(y[mask], ref(x[mask]), rtol=0, atol=1e-12)
        assert torch.all(y[~mask] == 0)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=0, atol=1e-12)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x, mask)[mask], ref(x[mask]), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours(x), ref(x.reshape(-1, 5)).reshape(x.shape), rtol=0, atol=1e-12)


def test_imi_is_eq_3():
    torch.manual_seed(4)
    block = IMIBlock(C, "learned").double().train()
    randomise_norms(block, seed=1)
    with torch.no_grad():
        block.weight.fill_(0.7)  # w_ci
    g = torch.Generator().manual_seed(5)
    f_dec, lang, f_t = (torch.randn(B, NT, C, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor(MASK)
    out, f_l = block(f_dec, lang, f_t, mask)
    fl = bn_relu_on_real(lang.tolist(), MASK, block.lang_transform)  # F_l^n = transform(F_l^(n-1))
    pre = {}
    for b in range(B):
        real = [j for j in range(NT) if MASK[b][j]]
        values = {j: relu(lin(fl[(b, j)], block.value_proj)) for j in real}  # ReLU[F_l^n W'_l^n]
        for i in real:
            q = relu(lin(f_dec[b, i].tolist(), block.attn_proj))  # ReLU[F_dec^n W_a^n]
            a = softmax([sum(q[c] * fl[(b, j)][c] for c in range(C)) for j in real])  # Eq. (3)
            f_i = [sum(w * values[j][c] for w, j in zip(a, real)) for c in range(C)]
            pre[(b, i)] = [f_dec[b, i, c].item() + 0.7 * f_i[c] for c in range(C)]
    keys = list(pre)
    normed = dict(zip(keys, batch_norm([pre[k] for k in keys], block.norm)))  # BN(F_dec + w_ci F_i)
    expected = [[normed.get((b, i), [0.0] * C) for i in range(NT)] for b in range(B)]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)
    expected_fl = [[fl.get((b, i), [0.0] * C) for i in range(NT)] for b in range(B)]
    torch.testing.assert_close(f_l, torch.tensor(expected_fl, dtype=torch.float64), rtol=0, atol=1e-10)


def test_imi_star_injects_the_same_language_feature():
    block = IMIBlock(C, "same").double().train()
    assert {n for n, _ in block.named_parameters()} == {"weight", "norm.weight", "norm.bias"}
    f_dec, f_t = inputs(2)[0], inputs(3)[0]
    out, f_l = block(f_dec, f_dec * 5, f_t, torch.tensor(MASK))
    ref = block.norm(f_dec + f_t, torch.tensor(MASK))  # w_ci starts at 1
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert f_l is f_t


def test_lfr_loss_against_a_hand_computation():
    cfg = smoke(m3att_dim=C, m3att_heads=1, max_words=NT)
    torch.manual_seed(6)
    lfr = LanguageReconstruction(cfg).double().train()
    randomise_norms(lfr, seed=2)
    g = torch.Generator().manual_seed(7)
    f_t = torch.randn(B, NT, C, generator=g, dtype=torch.float64) * torch.tensor(MASK)[..., None]
    f_dec = torch.randn(B, NT, C, generator=g, dtype=torch.float64)
    sentence = torch.randn(B, C, generator=g, dtype=torch.float64)
    mask = torch.tensor(MASK)
    rec, target = lfr(f_t, sentence, f_dec, mask)

    W = lfr.proj.weight.tolist()  # W_proj, no bias
    proj = lambda v: relu([sum(W[o][i] * v[i] for i in range(C)) for o in range(C)])  # noqa: E731

    def position(pos, c):  # the cosine positional embedding e, counted from the first word
        angle = pos / 10000 ** ((c - c % 2) / C)
        return math.sin(angle) if c % 2 == 0 else math.cos(angle)

    want_target, want_rec = [], []
    rows = f_dec.tolist()
    h = {(b, i): rows[b][i] for b in range(B) for i in range(NT) if MASK[b][i]}
    for layer in lfr.layers:  # three stacked linear layers with BN and ReLU (padded rows stay 0)
        nested = [[h.get((b, i), [0.0] * C) for i in range(NT)] for b in range(B)]
        h = bn_relu_on_real(nested, MASK, layer)
    for b in range(B):
        real = [i for i in range(NT) if MASK[b][i]]
        terms = [proj([f_t[b, i, c].item() + position(k, c) for c in range(C)]) for k, i in enumerate(real)]
        terms.append(proj(sentence[b].tolist()))  # F_t', concatenated along the sequence
        want_target.append([sum(t[c] for t in terms) / (len(real) + 1) for c in range(C)])  # Eq. (4)
        want_rec.append([sum(h[(b, i)][c] for i in real) / len(real) for c in range(C)])  # average pooling
    # the position table is stored in float32 (as the language encoder's): its rounding is ~1e-8
    torch.testing.assert_close(target, torch.tensor(want_target, dtype=torch.float64), rtol=0, atol=1e-7)
    torch.testing.assert_close(rec, torch.tensor(want_rec, dtype=torch.float64), rtol=0, atol=1e-10)
    mse = sum((want_rec[b][c] - want_target[b][c]) ** 2 for b in range(B) for c in range(C)) / (B * C)
    assert mse > 1e-3  # not a trivially zero loss

    logits = torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64)
    masks = (torch.rand(B, 4, 4, generator=g) > 0.5).double()
    bce = 0.0
    for x, y in zip(logits.flatten().tolist(), masks.flatten().tolist()):
        p = 1 / (1 + math.exp(-x))
        bce -= y * math.log(p) + (1 - y) * math.log(1 - p)
    bce /= logits.numel()
    total, logs = m3att_loss(logits, (rec, target), masks, rec_weight=0.1)
    assert logs["loss_rec"].item() == pytest.approx(mse, rel=1e-6)
    assert logs["loss_pixel"].item() == pytest.approx(bce, rel=1e-6)
    assert total.item() == pytest.approx(bce + 0.1 * mse, rel=1e-6)  # Eq. (5): w_mask = 1, w_rec = 0.1
    total, logs = m3att_loss(logits, None, masks, rec_weight=0.1)  # LFR off
    assert logs["loss_rec"].item() == 0 and total.item() == pytest.approx(bce, rel=1e-6)


# ----------------------------------------------------------------------------------------
# the model

@pytest.mark.parametrize("attention", ["shared", "independent", "generic"])
@pytest.mark.parametrize("imi,lfr", [("learned", True), ("same", True), ("off", False)])
def test_shapes_and_gradients_reach_every_parameter(attention, imi, lfr):
    cfg = smoke(m3att_attention=attention, m3att_imi=imi, m3att_lfr=lfr)
    torch.manual_seed(1)
    model = build_model(cfg).train()
    assert isinstance(model, M3Att)
    masks = (torch.rand(3, 32, 32) > 0.5).float()
    out = model(torch.randn(3, 3, 32, 32), words_batch(cfg, [1, 7, 20]), return_attention=True)
    assert out.mask_logits.shape == (3, 1, 32, 32) and out.patch_logits.shape == (3, 1, 4, 4)
    torch.testing.assert_close(out.patch_logits, torch.nn.functional.avg_pool2d(out.mask_logits, 8))
    assert out.seed_attention is None and len(out.mutual_attention) == cfg.m3att_layers
    assert out.mutual_attention[0].lav.shape == (3, 20, 16)
    assert (out.mutual_attention[0].val is None) == (attention == "generic")
    assert (out.reconstruction is not None) == lfr
    loss, _ = m3att_loss(out.mask_logits, out.reconstruction, masks)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert silent == []
    has = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert ("lfr" in has) == lfr and any(".imi." in n for n, _ in model.named_parameters()) == (imi != "off")


def test_lfr_does_not_run_at_inference():
    model = build_model(smoke()).eval()
    calls = []
    model.lfr.register_forward_hook(lambda *a: calls.append(1))
    assert model(torch.randn(1, 3, 32, 32), words_batch(model.cfg, [4])).reconstruction is None
    model.train()
    assert model(torch.randn(1, 3, 32, 32), words_batch(model.cfg, [4])).reconstruction is not None
    assert calls == [1]


@pytest.mark.parametrize("training", [False, True])
def test_padding_does_not_change_the_prediction(training):
    """The same words with 16 or 2 padding slots: every attention, batch norm and the mask
    decoder's map order ignore padding (in training mode the batch statistics too)."""
    cfg = smoke()
    torch.manual_seed(2)
    model = build_model(cfg).double().train(training)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    long = words_batch(cfg, [4, 6])
    short = long[:, -8:]  # the same words, 2 and 4 padding slots instead of 16 and 14
    a, b = model(images, long), model(images, short)
    torch.testing.assert_close(a.mask_logits, b.mask_logits, rtol=0, atol=1e-10)
    if training:
        torch.testing.assert_close(a.reconstruction[0], b.reconstruction[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(a.reconstruction[1], b.reconstruction[1], rtol=0, atol=1e-10)


def test_image_index_gives_the_same_result_as_copies():
    cfg = smoke()
    model = build_model(cfg).double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    index = torch.tensor([0, 1, 1, 0])
    words = words_batch(cfg, [3, 7, 12, 5])
    torch.testing.assert_close(model(images, words, index).mask_logits, model(images[index], words).mask_logits,
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="image_index"):
        model(images, words, index[:3])


def test_bad_inputs_are_refused():
    cfg = smoke()
    model = build_model(cfg)
    with pytest.raises(ValueError, match="takes 32x32 only"):
        model(torch.randn(1, 3, 32, 40), words_batch(cfg, [2]))
    w = words_batch(cfg, [3, 3])
    w[1] = 0
    with pytest.raises(ValueError, match="no words"):
        model(torch.randn(2, 3, 32, 32), w)


def test_config_options_are_checked():
    assert get_preset("paper").model.family == "restr"
    assert get_preset("paper", model={"family": "m3att"}).model.m3att_width == 256  # the paper's C
    assert smoke().m3att_width == 32 and get_preset("tiny", model={"family": "m3att"}).model.m3att_width == 128
    with pytest.raises(ConfigError, match="model.m3att_imi = 'off': applies to model.family = 'm3att' only"):
        get_preset("smoke", model={"m3att_imi": "off"})
    for field, value, why in (("family", "lavt", "choose one of restr, m3att"),
                              ("m3att_attention", "vat", "choose one of shared, independent, generic"),
                              ("m3att_imi", "yes", "choose one of learned, same, off"),
                              ("m3att_layers", 0, ">= 1"), ("m3att_heads", 3, "must divide M3Att's width C = 32")):
        with pytest.raises(ConfigError, match=f"model.{field} = .*{why}"):
            smoke(**{field: value})
    with pytest.raises(ConfigError, match="train.rec_weight"):
        get_preset("smoke", train={"rec_weight": -1.0})


def test_every_zoo_model_keeps_its_identity():
    """The new fields take defaults that every ReSTR config keeps: the book's request for
    each committed zoo model (ReSTR's and M3Att's alike) still hashes to that model's identity."""
    from restr.book.models import model_config
    from restr.book.runner import book_profile
    from restr.zoo.manifest import current_identity, entry_model, read_manifest, zoo_folder, zoo_identity

    models = read_manifest(zoo_folder())
    assert models
    for entry in models:
        profile_name, name = entry_model(entry)  # quick and converged models alike
        profile = book_profile(profile_name)
        cfg = model_config(profile, profile.data_root, name, int(entry["seed"]))
        assert cfg.model.family == entry["config"]["model"].get("family", "restr"), entry["name"]
        assert zoo_identity(cfg, entry["data_fingerprint"]) == current_identity(entry), entry["name"]


def test_the_step_never_reads_a_device_value_on_the_host(monkeypatch):
    from engine.test_train_step import HostSync, NoHostSync  # noqa: F401 - the ReSTR step's detector

    from restr.engine.distributed import Dist
    from restr.engine.optim import build_optimizer, build_scheduler
    from restr.engine.step import TrainStep

    monkeypatch.setattr(M3Att, "_check", lambda self, *a: None)  # reads the words on CPU only
    cfg = get_preset("smoke", model={"family": "m3att"}, train={"iterations": 10})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train)
    step = TrainStep(model, opt, build_scheduler(opt, cfg.train), torch.amp.GradScaler("cpu", enabled=False),
                     cfg.train, None, Dist())
    assert step.part_names == ("loss", "loss_rec", "loss_pixel")
    batch = (torch.randn(2, 3, 32, 32), words_batch(cfg.model, [3, 9]), (torch.rand(2, 32, 32) > 0.5).float())
    step([batch])
    with NoHostSync():
        step([batch])
    means, n = step.take_window()
    assert n == 2 and means[1] > 0 and means[0] == pytest.approx(means[2] + 0.1 * means[1])


def test_the_model_compiles_as_one_graph():
    torch.manual_seed(0)
    model = build_model(smoke())
    images, words = torch.randn(2, 3, 32, 32), words_batch(model.cfg, [3, 9])
    model.eval()
    ref = model(images, words)
    out = torch.compile(model, fullgraph=True, backend="eager")(images, words)
    torch.testing.assert_close(out.mask_logits, ref.mask_logits)


# ----------------------------------------------------------------------------------------
# training, resume, evaluation, cost (the command line)

def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "restr", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=600)


def train_args(root: Path) -> list[str]:
    return ["--preset", "smoke", "--family", "m3att", "--data", str(root), "--dataset", "synthref",
            "--split-by", "unc", "--no-progress", "--iterations", "30", "--batch-size", "4",
            "--set", "train.ckpt_every=4", "--set", "train.val_every=10", "--set", "data.augment=true"]


@pytest.mark.slow
def test_smoke_training_resumes_bit_identically_and_evaluates(data_root, tmp_path):
    from restr.engine.trainer import KILL_ENV
    from restr.eval.predict import Predictor
    from restr.runs.folder import load_checkpoint, load_run, read_metrics

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p = cli("train", *train_args(data_root), "--workers", "0", "--out", str(ref))
    assert p.returncode == 0, p.stderr
    # SIGKILL after step 19, mid-epoch and 3 steps after the last checkpoint (step 16)
    p = cli("train", *train_args(data_root), "--workers", "2", "--out", str(killed), env={KILL_ENV: "19"})
    assert p.returncode == -9, (p.returncode, p.stderr)
    p = cli("train", *train_args(data_root), "--workers", "0", "--out", str(killed), "--resume")
    assert p.returncode == 0, p.stderr
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt")["model"] for r in (ref, killed))
    assert any("running_var" in k for k in a)  # the batch norms' statistics are part of the state
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def strip(rows):
        timing = ("images_per_s", "elapsed_s", "val_seconds", "cpu_s")
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    rows = read_metrics(ref)
    assert strip(rows) == strip(read_metrics(killed))
    logs = [r for r in rows if "loss" in r and "event" not in r]
    assert all("loss_rec" in r and "loss_patch" not in r for r in logs)
    assert all(math.isfinite(r["loss"]) and r["loss_rec"] > 0 for r in logs)
    assert logs[-1]["loss_pixel"] < logs[0]["loss_pixel"]  # it learns
    assert [r["step"] for r in rows if r.get("split") == "val"] == [10, 20, 30]
    run = load_run(ref)
    assert isinstance(run.model, M3Att) and run.cfg.model.family == "m3att"
    image = torch.randint(0, 255, (40, 50, 3), dtype=torch.uint8).numpy()
    words = " ".join(run.vocab.words[2:5])
    r = Predictor.from_run(ref).predict(image, words, return_attention=True)
    assert r["mask"].shape == (40, 50) and r["patch_map"].shape == (4, 4)
    assert len(r["mutual_attention"]) == 3 and r["seed_attention"] is None
    p = cli("evaluate", "--run", str(ref), "--split", "val", "--max-expressions", "16", "--workers", "0")
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_cost_counts_m3att_per_module():
    from restr.perf.cost import measure

    p = cli("cost", "--preset", "paper", "--family", "m3att", "--device", "meta", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["rows"] == ["vision", "language", "projection", "encoder", "fusion", "decoder", "lfr"]
    params, macs = r["params"], r["macs"]
    assert params["total"] == sum(params[row] for row in r["rows"])
    assert macs["lfr"] == 0 and params["lfr"] == 256 * 256 + 3 * (256 * 256 + 2 * 256)  # training only
    # one shared M3Att module: four C x C projections with bias, then HW x C and its batch norm
    with torch.device("meta"):
        model = build_model(get_preset("paper", model={"family": "m3att", "vit_weights": None}).model)
    one = 4 * (256 * 256 + 256) + 900 * 256 + 2 * 256
    assert sum(q.numel() for q in model.m3dec.layers[0].mutual.parameters()) == one
    restr = measure(get_preset("paper").model, device="meta")  # the same encoders as ReSTR's
    assert params["vision"] == restr["params"]["vision"] and params["language"] == restr["params"]["language"]
    assert macs["vision"] == restr["macs"]["vision"]
    p = cli("cost", "--preset", "smoke", "--family", "m3att")
    assert p.returncode == 0 and p.stdout.startswith("M3Att (shared attention, IMI learned, LFR on)")
    assert "encoder" in p.stdout and "lfr" in p.stdout


def test_cost_on_the_cpu_counts_the_same_as_meta():
    from restr.perf.cost import measure

    cfg = smoke()
    assert measure(cfg, device="cpu")["macs"] == measure(cfg, device="meta")["macs"]
