"""Per-variant training recipes in study files: a variant trained its own way, nothing unfair allowed."""

import pytest

from ablate.errors import AblateError
from ablate.study import load_study

from test_study import write_study


def test_a_recipe_gives_one_variant_its_training_settings(small_corpus, tmp_path):
    recipe = tmp_path / "v2017.toml"
    recipe.write_text('variant = "vaswani"\nschedule = "inverse-sqrt"\nlr = 1.4e-3\nmin_lr = 0.0\nbeta2 = 0.98\n')
    file = write_study(tmp_path / "r.toml", small_corpus, {"recipes": {"vaswani": {"file": "v2017.toml",
                                                                                  "label_smoothing": 0.1}}},
                       name="r", variants=["baseline", "vaswani"])
    spec = load_study(file)
    vas = spec.trial_config(spec.variants[1], 0)
    assert (vas.schedule, vas.lr, vas.beta2, vas.label_smoothing) == ("inverse-sqrt", 1.4e-3, 0.98, 0.1)
    base = spec.trial_config("baseline", 0)
    assert (base.schedule, base.label_smoothing, base.beta2) == ("cosine", 0.0, spec.config.beta2) != (0, 0, 0.98)
    tuned = spec.trial_config(spec.variants[1], 0, lr=2.8e-3)  # a tuned lr applies over the recipe's
    assert tuned.lr == 2.8e-3 and tuned.min_lr == 0.0 and tuned.schedule == "inverse-sqrt"
    assert spec.identity()["recipes"] == {spec.variants[1]: {"schedule": "inverse-sqrt", "lr": 1.4e-3,
                                                             "min_lr": 0.0, "beta2": 0.98, "label_smoothing": 0.1}}


@pytest.mark.parametrize("recipes,needle", [
    ({"vaswani": {"budget": "10steps"}}, "training settings only"),
    ({"vaswani": {"batch_size": 8}}, "training settings only"),
    ({"rope": {"lr": 1e-3}}, "not one of the study's variants"),
    ({"vaswani": {"file": "missing.toml"}}, "missing.toml"),
    ({"vaswani": {"label_smoothing": "lots"}}, "label_smoothing"),
])
def test_bad_recipes_are_one_line_errors(small_corpus, tmp_path, recipes, needle):
    file = write_study(tmp_path / "bad.toml", small_corpus, {"recipes": recipes}, name="bad",
                       variants=["baseline", "vaswani"])
    with pytest.raises(AblateError, match=needle) as err:
        load_study(file)
    assert "\n" not in str(err.value)
