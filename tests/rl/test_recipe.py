"""Bad recipes and inputs fail with one line naming the input and what to do, exit code 2."""
import yaml

from cwm.rl.recipe import load_recipe
from cwm.rl.train import main


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    code, err = _run(capsys, "--recipe", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err and "demo" in err and "\n" not in err

    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"grpo": {"eps_hi": 0.3}, "envs": [{"kind": "output_prediction"}]}))
    code, err = _run(capsys, "--recipe", str(typo))
    assert code == 2 and "unknown key(s) eps_hi" in err and "eps_high" in err

    no_model = tmp_path / "no_model.yaml"
    no_model.write_text(yaml.safe_dump({"init": str(tmp_path / "missing"), "out": str(tmp_path / "out"),
                                        "envs": [{"kind": "output_prediction", "shards": str(tmp_path)}]}))
    code, err = _run(capsys, "--recipe", str(no_model))
    assert code == 2 and "no exported model there" in err and not (tmp_path / "out").exists()

    code, err = _run(capsys, "--recipe", str(no_model), "--set", "steps")
    assert code == 2 and "KEY=VALUE" in err


def test_overrides_and_section_defaults():
    recipe = load_recipe("rl_mixed", ["steps=7", "grpo.eps_high=0.28", "optim.lr=2e-6"])
    assert recipe.steps == 7 and recipe.grpo.eps_high == 0.28 and recipe.grpo.eps_low == 0.2
    # a section given in part keeps RL's defaults for the rest (constant LR, no warmup), not mid-training's
    assert recipe.optim.lr == 2e-6 and recipe.optim.min_lr_ratio == 1.0 and recipe.optim.warmup_steps == 0
    assert [e.kind for e in recipe.envs] == ["output_prediction", "codegen", "swe"] and not recipe.envs[2].required
