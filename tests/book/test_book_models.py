"""restr.book.models: one list of the book's models, which the notebooks ask for by name."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from restr.book import models as bm
from restr.book import paper
from restr.book import runner as book
from restr.config import BOOK_PROFILES

REPO = Path(__file__).resolve().parents[2]
QUICK, SMOKE, FULL = BOOK_PROFILES["quick"], BOOK_PROFILES["smoke"], BOOK_PROFILES["full"]


def test_every_request_resolves_to_its_exact_config():
    for prof in BOOK_PROFILES.values():
        for r in bm.requests(prof):
            cfg = bm.model_config(prof, "data/x", r.name)
            iterations = prof.iterations if r.main else prof.variant_iterations  # the start arms: main length
            expected = bm.run_config(prof, "data/x", iterations=iterations, seed=prof.seeds[0], **r.overrides)
            assert cfg.to_dict() == expected.to_dict(), (prof.name, r.name)


def test_table3_is_without_the_decoder_and_table4_follows_the_paper():
    for name, fusion, shared in (("table3-vme", "vme", False), ("table3-ime", "ime", False),
                                 ("table3-cme", "cme", False), ("table3-cme-dagger", "cme", True)):
        m = bm.model_config(QUICK, "d", name).model
        assert (m.fusion, m.shared, m.fusion_layers, m.decoder) == (fusion, shared, 4, False)
    rows = [r for r in paper.TABLE4 if r["layers"] in QUICK.table4_layers]
    assert len(rows) == 7  # the paper's seven rows
    for row in rows:
        m = bm.model_config(QUICK, "d", bm.table4_name(row["layers"], row["shared"], row["decoder"])).model
        assert (m.fusion_layers, m.shared, m.decoder, m.fusion) == (row["layers"], row["shared"], row["decoder"], "cme")
    main = bm.model_config(QUICK, "d", "main")
    assert (main.model.fusion, main.model.fusion_layers, main.model.decoder) == ("cme", 4, True)
    assert main.train.iterations == QUICK.iterations
    assert bm.model_config(QUICK, "d", "head-release").model.head == "release"
    # smoke trains the depths it lists only
    assert {r.name for r in bm.requests(SMOKE)} >= {"table4-2L", "table4-4L-dec"}
    assert not [r.name for r in bm.requests(SMOKE) if r.name.startswith("table4-6L")]


def test_identical_configs_are_one_model():
    for prof in BOOK_PROFILES.values():
        models = bm.book_models(prof)
        configs = [json.dumps(m.config(prof, "d").to_dict(), sort_keys=True) for m in models]
        assert len(set(configs)) == len(configs), prof.name
        answered = [r for m in models for r in m.requests]
        assert sorted(answered) == sorted(r.name for r in bm.requests(prof))
    assert bm.find_model(QUICK, "table4-4L").name == "table3-cme"  # Table 4's 4-layer row without decoder
    # quick trains its variants briefly: Table 4's 4-layer row with the decoder is not the main model ...
    assert bm.find_model(QUICK, "table4-4L-dec").name == "table4-4L-dec"
    # ... full trains them as long as the main model: then it is
    assert bm.find_model(FULL, "table4-4L-dec").name == "main"
    assert bm.model_config(FULL, "d", "table4-4L-dec").run_key() == bm.model_config(FULL, "d", "main").run_key()


def test_seeds_of_the_headline_models_and_of_the_rest():
    assert QUICK.seeds == (0, 1, 2) and SMOKE.seeds == (0,)
    for name in bm.HEADLINE:
        assert bm.model_seeds(QUICK, name) == QUICK.seeds
    for name in ("table4-2L", "table4-2L-dec", "table4-4L-shared-dec", "table4-6L", "table4-6L-shared", "head-release"):
        assert bm.model_seeds(QUICK, name) == (0,)
    assert bm.model_config(QUICK, "d", "table3-vme", seed=1).train.seed == 1
    seed1, seed0 = bm.model_config(QUICK, "d", "table3-vme", seed=1), bm.model_config(QUICK, "d", "table3-vme")
    assert seed1.run_key() != seed0.run_key()
    with pytest.raises(bm.UnknownModel, match=r"'table4-6L' of the quick book is trained with seeds \[0\], not 1"):
        bm.model_config(QUICK, "d", "table4-6L", seed=1)
    with pytest.raises(bm.UnknownModel, match="the smoke book has no model 'table4-6L'; it asks for: main, "):
        bm.model_config(SMOKE, "d", "table4-6L")


def test_a_converged_profile_seeds_every_claim_arm_and_trains_the_new_arms():
    """The converged zoo's profile shape: one budget for every arm, every claim arm with every
    seed, the fidelity arms with one; the baseline and the backbone starts; profile overrides
    reach every run (the start arms override them back)."""
    conv = dataclasses.replace(QUICK, name="c", variant_iterations=QUICK.iterations, claim_seeds=True,
                               curve_points=25, overrides=(("model.vit_pretrain", "classify"),),
                               arms=("conv", "starts"))
    names = [m.name for m in bm.book_models(conv)]
    assert "table4-4L-dec" not in names and bm.find_model(conv, "table4-4L-dec").name == "main"
    for name in ("main", "table3-vme", "table4-2L", "table4-6L-shared", "table2-conv"):
        assert bm.model_seeds(conv, name) == (0, 1, 2), name
    for name in ("head-release", "start-dense", "start-none"):
        assert bm.model_seeds(conv, name) == (0,), name
    base = bm.model_config(conv, "d", "table2-conv")
    assert (base.model.fusion, base.model.decoder, base.train.iterations) == ("concat-conv", True, QUICK.iterations)
    assert base.model.vit_pretrain == "classify" and base.train.val_every == QUICK.iterations // 25
    dense, none = bm.model_config(conv, "d", "start-dense"), bm.model_config(conv, "d", "start-none")
    assert (dense.model.vit_pretrain, dense.model.vit_weights) == ("dense", "pretrain")
    assert none.model.vit_weights is None
    assert len({bm.model_config(conv, "d", n).run_key() for n in ("main", "start-dense", "start-none")}) == 3
    assert bm.runs_count(conv) == 11 * 3 + 3  # eleven claim arms, three fidelity arms
    # the quick profile trains none of them
    assert not {"table2-conv", "start-dense", "start-none"} & {r.name for r in bm.requests(QUICK)}


def test_the_quick_book_fits_the_zoo_budget():
    """About 20 tiny models, 80 MB of fp16 weights (issue 12)."""
    assert len(bm.book_models(QUICK)) == 12 and bm.runs_count(QUICK) == 22
    # smoke also runs the convolutional baseline and M3Att's five arms, so CI runs chapter 7's code; it asks
    # for the backbone starts too (chapter 6's section on them), which are its main model there (the smoke
    # preset's ViT starts from scratch, so no start changes its config)
    assert bm.runs_count(SMOKE) == len(bm.book_models(SMOKE)) == 16
    assert {"start-dense", "start-none"} <= set(bm.find_model(SMOKE, "main").requests)
    assert bm.runs_count(FULL) == 21  # the 4-layer decoder pair's "with" is the main model there
    size = bm.weights_megabytes(QUICK, vocab_size=58)
    assert 40 < size < 80
    two = dataclasses.replace(QUICK, seeds=(0, 1))
    assert bm.runs_count(two) == 17 and bm.weights_megabytes(two, vocab_size=58) < size
    rows = bm.describe(QUICK)
    assert rows[0] == {"model": "main", "overrides": "decoder=True, fusion=cme, fusion_layers=4",
                       "iterations": QUICK.iterations,
                       "seeds": "0", "answers": "main"}


def test_the_converged_zoo_ships_the_weights_the_chapters_read_and_fits_beside_the_quick_zoo():
    """Issue 22's 200 MB: the converged campaign ships the weights of every model's first seed
    and of every seed of the models whose runs the chapters open per seed (``ch.run(name, seed)``
    with a seed that varies); the other seeds ship their log and scores."""
    conv = book.book_profile("converged")
    per_seed = set()
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for node in ast.walk(ast.parse(notebook_code(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run" \
                    and getattr(node.func.value, "id", "") == "ch" and len(node.args) == 2 \
                    and not isinstance(node.args[1], ast.Constant):
                per_seed.add(bm.find_model(conv, node.args[0].value).name)
    assert per_seed == set(conv.every_seed_weights) == {"main", "table3-vme"}
    for m in bm.book_models(conv):
        assert [bm.ships_weights(conv, m.name, s) for s in m.seeds] == [
            s == m.seeds[0] or m.name in per_seed for s in m.seeds], m.name
    assert all(bm.ships_weights(QUICK, m.name, s) for m in bm.book_models(QUICK) for s in m.seeds)
    from restr.book.zoo_train import shipping  # what `zoo train` hands to add_to_zoo
    from restr.zoo.manifest import Shipping

    assert shipping(QUICK, "table4-2L", 2) == Shipping()  # the quick zoo's scores ship after a book run
    bare, kept = shipping(conv, "table4-2L", 1), shipping(conv, "table3-vme", 2)
    assert (bare.weights, kept.weights, shipping(conv, "m3att", 0).weights) == (False, True, True)
    assert bare.score is not None and kept.score is not None
    # M3Att's 2.97 M parameters against ReSTR's 1.75 M: about 88 MB of the converged zoo, 71 MB of the quick
    both = bm.weights_megabytes(conv, vocab_size=58) + bm.weights_megabytes(QUICK, vocab_size=58)
    assert 150 < both < 175


def notebook_code(path: Path) -> str:
    """A notebook's code cells as one Python source (magics and shell lines left out)."""
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))


def model_requests_in(source: str) -> list[str]:
    """The literal names passed to model_config / model_seeds, or to the chapter's
    (restr.book.chapter.Chapter, ``ch``) config, run, seeds, arm and asks_for, in a
    notebook's code."""
    chapter = ("config", "run", "seeds", "arm", "asks_for")
    names = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if getattr(f, "id", getattr(f, "attr", "")) in ("model_config", "model_seeds") or (
                isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "ch" and f.attr in chapter):
            names += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return names


def test_notebooks_ask_for_models_through_the_list_only():
    # the quick profile's models, and the optional arms a profile may add (chapter 7 asks for
    # M3Att's only where they are trained)
    every_arm = dataclasses.replace(QUICK, arms=("conv", "starts", "m3att"))
    known = {r.name for r in bm.requests(every_arm)}
    asked = set()
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = notebook_code(path)
        assert not re.search(r"\brun_config\(", code), f"{path.name} builds a training config itself"
        names = model_requests_in(code)
        assert set(names) <= known, f"{path.name} asks for {set(names) - known}"
        asked |= set(names)
    assert {"main", "table3-vme", "table3-cme", "head-release", "m3att", "table2-conv"} <= asked


def test_models_command_prints_the_list(capsys):
    from restr.cli import main

    assert main(["models", "--profile", "quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["model", "steps", "seeds"]
    assert out[1].split()[:4] == ["main", str(QUICK.iterations), "0", "decoder=True,"]
    assert out[-1].startswith("12 models, 22 trained runs (one per model and seed), about ")
    assert len(out) == 1 + 12 + 1


def test_the_paper_books_size_is_counted_without_downloading(monkeypatch):
    """The paper preset asks for timm's hub weights; counting its parameters must not."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paper_book = book.book_profile("paper")
    size = bm.weights_megabytes(paper_book, vocab_size=12112)
    per_model = size / bm.runs_count(paper_book)
    assert 150 < per_model < 400  # ViT-B/16 + a 300-d language encoder + fusion, fp16 (~100 M weights)
