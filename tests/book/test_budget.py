"""The protocol's budget: the doubling test on the main arm's converged-sweep runs, the
budget file it fixes, and the converged profile that trains every arm for it."""
from __future__ import annotations

import json

import pytest

from restr.book import budget
from restr.book.models import book_models
from restr.book.recipe import sweep_configs
from restr.book.runner import book_profile
from restr.config import ConfigError


def sweep_file(folder, steps, ious, name=budget.MAIN_ROW, arithmetic="bfloat16"):
    """A converged-sweep file of one run of ``steps`` steps (64 expressions each) whose
    validations, evenly spaced, scored ``ious``."""
    points = [{"step": round(steps * (i + 1) / len(ious)), "cum_iou": v} for i, v in enumerate(ious)]
    row = {"name": name, "arithmetic": arithmetic, "config": {"train": {"iterations": steps}}, "curve": points,
           "final": {**points[-1], "seconds": steps * 0.3}}
    path = folder / f"sweep-converged-{64 * steps}.json"
    path.write_text(json.dumps({"sweep": "converged", "expressions": 64 * steps, "rows": [row]}))
    return path


RISING = [0.1, 0.2, 0.25, 0.28, 0.30, 0.32, 0.34, 0.36, 0.38, 0.40]  # +2 points a tenth at the end
FLAT = [0.1, 0.2, 0.3, 0.35, 0.38, 0.40, 0.41, 0.415, 0.415, 0.415]


def test_the_doubling_test_fixes_the_smallest_budget_that_passes(tmp_path):
    files = [sweep_file(tmp_path, 2250, RISING), sweep_file(tmp_path, 4500, FLAT)]
    out = tmp_path / "budget.json"
    with pytest.raises(ConfigError, match="no answer yet") as err:  # 4,500 passes the rule, but nothing at 9,000
        budget.fix_budget(files, out)
    assert "untested (no run at 2x)" in str(err.value) and "fails (still learning)" in str(err.value)
    assert not out.exists()
    files.append(sweep_file(tmp_path, 9000, [v + 0.005 for v in FLAT]))  # 0.5 points more at twice the steps
    fixed = budget.fix_budget(files, out)
    assert fixed["steps"] == 4500 and fixed["expressions_per_step"] == 64
    assert budget.read_budget(out)["steps"] == 4500
    assert [e["steps"] for e in fixed["evidence"]] == [2250, 4500, 9000]
    assert [e["doubling test"] for e in fixed["evidence"]][:2] == ["fails (still learning)", "passes"]
    # other rows of the sweep are not the main arm
    other = tmp_path / "other"
    other.mkdir()
    rows = [sweep_file(other, 2250, FLAT, name="batch 32"), sweep_file(other, 4500, FLAT, name="batch 32")]
    assert budget.passing_steps(budget.doubling_test(rows)) is None
    # a fixed budget does not move with new runs unless the change is given a reason
    files = [sweep_file(tmp_path, 2250, RISING), sweep_file(tmp_path, 4500, RISING),
             sweep_file(tmp_path, 9000, FLAT), sweep_file(tmp_path, 18000, FLAT)]
    with pytest.raises(ConfigError, match="fixes the budget at 4,500 steps .* --replace"):
        budget.fix_budget(files, out)
    moved = budget.fix_budget(files, out, replace="the 4,500-step run was redone")
    assert moved["steps"] == 9000 and moved["replaces"] == {"steps": 4500, "reason": "the 4,500-step run was redone"}
    out.write_text("{not json")
    with pytest.raises(ConfigError, match="is not a protocol budget file"):
        budget.read_budget(out)


def test_the_converged_profile_waits_for_the_budget_and_trains_the_doubling_tests_main_arm(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_FILE", tmp_path / "protocol-budget.json")
    with pytest.raises(ConfigError, match="not fixed yet .*recipe budget"):
        book_profile("converged")
    (tmp_path / "protocol-budget.json").write_text(json.dumps({"steps": 4500}))
    prof = book_profile("converged")
    models = {m.name: m for m in book_models(prof)}
    assert {m.iterations for m in models.values()} == {4500}  # one budget for every arm
    assert models["main"].seeds == models["table4-6L-shared"].seeds == models["m3att-no-lfr"].seeds == (0, 1, 2)
    assert models["start-dense"].seeds == models["head-release"].seeds == (0,)  # fidelity arms: one seed
    assert {"table2-conv", "start-none", "m3att-generic"} <= set(models)
    # the main arm is the run the doubling test read, up to how often it is checkpointed
    main = models["main"].config(prof, "data/synthref-v2")
    (_, final_start), = [(c, cfg) for c, cfg in sweep_configs("data/synthref-v2", 64 * 4500, val_every=25,
                                                               sweep="converged") if c.name == budget.MAIN_ROW]
    assert [d for d in main.diff(final_start) if not d.startswith("train.ckpt_every")] == []


def test_the_campaign_is_costed_at_the_main_arms_minutes_per_budget(tmp_path):
    # the converged profile: 16 arms with 3 seeds (the main arm, Table 3(b)'s four, Table 4's five,
    # the baseline, M3Att's five) and the three fidelity arms with one
    assert budget.campaign_runs() == 51
    table = budget.doubling_test([sweep_file(tmp_path, 2250, RISING), sweep_file(tmp_path, 4500, FLAT)])
    costs = budget.campaign_cost(table, runs=10, jobs=2)
    assert [c["steps"] for c in costs] == [2250, 4500]
    assert costs[0]["minutes per run"] == pytest.approx(2250 * 0.3 / 60)  # the run's own seconds
    assert costs[1]["core-hours"] == pytest.approx(10 * 4500 * 0.3 / 3600)
    assert costs[1]["wall hours"] == pytest.approx(costs[1]["core-hours"] / 2)
    text = budget.format_cost(costs, 10)
    assert "10 runs of the converged profile" in text and "4,500 bfloat16" in text and "22.5 min a run" in text


def test_a_cap_fixes_an_affordable_rung_only_while_the_doubling_test_has_no_answer(tmp_path):
    files = [sweep_file(tmp_path, 2250, RISING), sweep_file(tmp_path, 4500, RISING)]
    out = tmp_path / "budget.json"
    with pytest.raises(ConfigError, match="needs its reason"):
        budget.cap_budget(4500, " ", files, out)
    with pytest.raises(ConfigError, match="3,000 steps is not on the ladder"):
        budget.cap_budget(3000, "the machine", files, out)
    with pytest.raises(ConfigError, match="no run of 9,000 steps .*--expressions 576000"):
        budget.cap_budget(9000, "the machine", files, out)
    assert not out.exists()
    capped = budget.cap_budget(4500, "72,000 steps cost 281 core-hours", files, out)
    assert capped["steps"] == 4500 and capped["capped"] and capped["doubling test answer"] is None
    assert capped["reason"] == "72,000 steps cost 281 core-hours"
    assert [e["doubling test"] for e in capped["evidence"]] == ["fails (still learning)"] * 2
    assert budget.read_budget(out)["steps"] == 4500
    assert "4,500 steps of 64 expressions" in budget.describe(capped) and "a cap (72,000" in budget.describe(capped)
    with pytest.raises(ConfigError, match="fixes the budget at 4,500 steps .*--replace"):  # a cap does not move alone
        budget.cap_budget(2250, "cheaper", files, out)
    # once the doubling test answers at or under the cap, the cap is not the protocol's way
    flat = [sweep_file(tmp_path, 2250, FLAT), sweep_file(tmp_path, 4500, [v + 0.005 for v in FLAT])]
    with pytest.raises(ConfigError, match="answers 2,250 steps, within the cap: fix that with --fix"):
        budget.cap_budget(4500, "the machine", flat, tmp_path / "other.json")


def test_the_budget_command_refuses_a_cap_and_fix_together_and_a_reason_alone(capsys):
    from restr.commands.recipe import main

    assert main(["budget", "--cap", "9000", "--fix"]) == 2
    assert "give one" in capsys.readouterr().err
    assert main(["budget", "--reason", "because"]) == 2
    assert "--reason goes with --cap" in capsys.readouterr().err
