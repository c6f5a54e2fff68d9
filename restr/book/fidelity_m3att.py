"""The M3Att section of the fidelity page: every choice where this project's M3Att can
differ from its paper (Liu et al., "Multi-Modal Mutual Attention and Iterative
Interaction for Referring Image Segmentation"; text in the sources' ``paper/`` folder).

A table of its own (:data:`M3ATT_CHOICES`), not rows of ReSTR's: M3Att has no public
release read here, so each row has two sides, the paper's text and this project, and
the reason where they differ. :func:`restr.book.fidelity.page_markdown` puts
:func:`section_markdown` at the end of ``book/fidelity.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

TEXT = "text"  # this project follows the paper's text
ENCODERS = "encoders"  # the book's encoders (or protocol) in place of the paper's, for the comparison with ReSTR
OPEN = "open"  # the text leaves it open: a choice of ours
KIND_TEXT = {TEXT: "the text", ENCODERS: "the book's (for the comparison)", OPEN: "ours (the text is silent)"}


@dataclass(frozen=True)
class M3AttChoice:
    topic: str
    paper: str  # the paper's text ("-" where it says nothing)
    ours: str  # this project (model.family = "m3att")
    kind: str  # TEXT | ENCODERS | OPEN
    option: str = ""  # the option that changes it, as section.field=value ("" when none)
    why: str = ""  # the reason, for ENCODERS and OPEN rows


M3ATT_CHOICES: tuple[M3AttChoice, ...] = (
    # --- encoders -------------------------------------------------------------------------
    M3AttChoice("vision backbone", "Darknet-53 (416 x 416) or Swin-B (480 x 480)",
                "the book's ViT: the same one, from the same start, as every ReSTR model of the preset", ENCODERS,
                why="the comparison with ReSTR then isolates fusion and decoding"),
    M3AttChoice("vision feature F_vis", "one H x W x C feature of the CNN (which level is not said)",
                "the ViT's patch tokens, one scale at 1/P, projected to C", ENCODERS,
                why="a ViT has one scale; the patch grid is the only feature map it gives"),
    M3AttChoice("language encoder", "GloVe and a bidirectional LSTM; F_t its hidden states, F_t' its final state",
                "GloVe and the book's transformer encoder; F_t its word features projected to C; F_t' their mean "
                "over the real words", ENCODERS,
                why="the same language encoder as ReSTR; a transformer has no final state, and the mean of the "
                    "words is the usual sentence feature of one"),
    M3AttChoice("input projections to C", "- (\"all linear layers ... are followed by a Batch Normalization and "
                "ReLU function unless otherwise noticed\")", "linear, batch norm, ReLU, for each modality", TEXT),
    M3AttChoice("where the rule applies", "all linear and convolution layers",
                "input projections, M3Att's output projection, IMI's language transform, LFR's three layers, the "
                "mask decoder's convolutions; not the query/key/value and output projections inside attention, "
                "nor the transformer layers' MLPs", OPEN,
                why="Eq. (1) and (3) write those projections without them; a ReLU on keys would leave the "
                    "attention logits non-negative"),
    # --- widths ---------------------------------------------------------------------------
    M3AttChoice("width C", "256 for the transformers, 512 for the mask decoder",
                "256 where the preset's D is at least 256 (the paper preset), else D (tiny: 128, smoke: 32); "
                "the mask decoder 2C", OPEN, "model.m3att_dim=256",
                why="at toy scale the same width as ReSTR's D, so the two compare at one width"),
    M3AttChoice("heads", "8 for all transformer layers", "8 in every multi-head attention; M3Att itself one head",
                TEXT, "model.m3att_heads=4",
                why="Eq. (1) scales the one mutual attention matrix by 1/sqrt(C)"),
    M3AttChoice("transformer encoder", "N_enc = 2 layers on the CNN feature",
                "2 post-norm layers (self-attention, MLP 4C with GELU) on the projected ViT tokens; no extra "
                "position encoding", OPEN, "model.m3att_enc_layers=0",
                why="the layer form of the paper's [5]; the ViT's tokens already carry their positions"),
    # --- M3Att and M3Dec ------------------------------------------------------------------
    M3AttChoice("mutual attention", "Eq. (1)-(2b); F_mul = F_V^a (F_L^a)^T; a linear layer back to C",
                "as written; padding words masked out of VAL's softmax; the linear layer over F_mul's HW channels "
                "is followed by batch norm and ReLU (the rule)", TEXT),
    M3AttChoice("input size", "416 or 480", "the preset's (paper 480, tiny 64); the model refuses any other size",
                TEXT, why="the linear layer over F_mul's HW channels is built for one number of vision tokens"),
    M3AttChoice("shared or independent A_mut (Table I)", "shared by default; independent: \"two extra linear "
                "project layers applied on two inputs\"", "shared; independent: two extra key projections give "
                "the matrix VAL is normalised from", TEXT, "model.m3att_attention=independent"),
    M3AttChoice("generic attention baseline (Table I, Table II #0)", "word features as query, vision features as "
                "key and value, LAV only, \"similar as ... VLT\"", "the M3Att module replaced by Eq. (2a) alone "
                "(same one-head form), then a linear layer C -> C with batch norm and ReLU; the rest of M3Dec "
                "unchanged", OPEN, "model.m3att_attention=generic",
                why="only the attention differs between the two arms"),
    M3AttChoice("M3Dec layer", "self-attention on the query; M3Att with F_enc; multi-head cross-attention from the "
                "query to the multimodal feature (Fig. 3(c))", "the same, with a residual and a post-norm "
                "LayerNorm around each attention and an MLP sub-block (4C) after them", OPEN,
                why="the sub-blocks of a transformer decoder layer ([5]), which M3Dec is; the text names the "
                    "three attention steps only"),
    M3AttChoice("N_dec", "3 (Table I)", "3", TEXT, "model.m3att_layers=1"),
    # --- IMI ------------------------------------------------------------------------------
    M3AttChoice("IMI", "Eq. (3); F_l^n a linear transform of F_l^(n-1); BN(F_dec + w_ci F_i)",
                "as written: Eq. (3) without a 1/sqrt(C) scale, softmax over the real words; the language "
                "transform with batch norm and ReLU (the rule)", TEXT, "model.m3att_imi=off"),
    M3AttChoice("IMI's scalar w_ci", "learnable", "learnable, starting at 1", OPEN,
                why="the text gives no start value; at 1 the injected feature counts from the first step"),
    M3AttChoice("IMI* (Table II #3)", "F_i^n replaced by F_t: every layer gets the same language feature",
                "BN(F_dec + w_ci F_t)", TEXT, "model.m3att_imi=same"),
    M3AttChoice("batch norm over words", "-", "statistics over the real words only; padded positions 0", OPEN,
                why="padding then never changes a prediction or a statistic"),
    # --- LFR and the loss -----------------------------------------------------------------
    M3AttChoice("LFR target, Eq. (4)", "F_proj = 1/(N_t+1) sum ReLU([(F_t + e) (+) F_t'] W_proj), W_proj C x C, "
                "e cosine positions", "as written: the sum over the real words and F_t', W_proj bias-free, e the "
                "sinusoidal table counted from the first word", TEXT, "model.m3att_lfr=false"),
    M3AttChoice("LFR reconstruction", "three stacked linear layers on F_dec, average pooling, MSE",
                "three linear layers each with batch norm and ReLU (the rule), averaged over the real words; MSE "
                "over the C channels", TEXT),
    M3AttChoice("gradient into the LFR target", "-", "not stopped: W_proj and the language features learn from "
                "L_rec too", OPEN,
                why="the text makes W_proj learnable and detaches nothing; note that F_proj = 0 (W_proj = 0) "
                    "is a trivial solution, so loss_rec falling to 0 may mean a collapse rather than a "
                    "reconstruction"),
    M3AttChoice("loss, Eq. (5)", "w_mask = 1, w_rec = 0.1; binary cross-entropy on the mask",
                "the same; the BCE over the pixels at the input resolution", TEXT, "train.rec_weight=0"),
    M3AttChoice("LFR at inference", "\"computationally free during inference\"",
                "computed in training mode only", TEXT),
    # --- mask decoder ---------------------------------------------------------------------
    M3AttChoice("mask decoder (Fig. 6)", "self-attention on F_dec; its vectors as the kernels of a 1 x 1 "
                "convolution on F_enc (N_t maps); four stacked convolutions with upsampling between them",
                "the same; the self-attention with a residual and LayerNorm; the maps of padded words 0 and "
                "the real words first (map j is word j, whatever the padding)", TEXT),
    M3AttChoice("the four convolutions", "- (the mask decoder's C is 512)",
                "3 x 3; widths 2C, C, C/2, then 1; batch norm and ReLU after the first three", OPEN,
                why="halving the width after each upsampling keeps every convolution's MACs about equal"),
    M3AttChoice("upsampling to the input size", "\"upsampling layers are inserted between convolution layers\"",
                "bilinear x2 between each two of the four convolutions, then bilinear to the input size (x2 more "
                "at P = 16, none at P = 8)", OPEN,
                why="three x2 steps fit between four convolutions; the ViT's grid is 1/16 of the input at the "
                    "paper's size"),
    M3AttChoice("patch-level output", "- (M3Att has none)", "the mask logits averaged over each patch, for the "
                "displays that show ReSTR's patch map; never trained", OPEN,
                why="the predictor and explorer read a patch map from every model"),
    # --- training -------------------------------------------------------------------------
    M3AttChoice("optimisation", "Adam, lr 0.005 with step decay, batch 48, 50 epochs",
                "the book's protocol for every arm (the preset's AdamW, schedule and budget, as ReSTR's arms)",
                ENCODERS, why="arms compared at one budget and one optimiser"),
    M3AttChoice("batch norm under torchrun", "4 GPUs (statistics per GPU or synchronised: not said)",
                "each process's own statistics (no SyncBatchNorm)", OPEN,
                why="not tried yet; a one-process run is what the book trains"),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown() -> str:
    lines = ["| choice | M3Att paper's text | this project (`model.family=m3att`) | option | ours follows | why |",
             "|---|---|---|---|---|---|"]
    for c in M3ATT_CHOICES:
        option = f"`{c.option}`" if c.option else "-"
        lines.append("| " + " | ".join(_cell(x) for x in (c.topic, c.paper, c.ours, option, KIND_TEXT[c.kind],
                                                            c.why or "-")) + " |")
    return "\n".join(lines)


def section_markdown() -> str:
    return f"""## M3Att: the paper and this project

The book also builds the sources' second paper, M3Att (Liu, Ding, Zhang, Jiang), as a
second model family on ReSTR's own vision and language encoders
(`--set model.family=m3att`; `python -m restr cost --family m3att` counts it). Its
authors' code is not read here: every row compares the paper's text with this project.
Where the text is silent the choice is ours, with its reason; where the paper used a
CNN, a bidirectional LSTM or its own training schedule, the book uses ReSTR's
encoders and protocol, so that a comparison of the two isolates fusion and decoding.

{table_markdown()}
"""
