"""Recipe loading: every yaml key a typed flag; misspelt keys and flags are errors."""
import glob
import os

import pytest
import yaml

from src.model_utils.config import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"model": "ghostnetv2_100", "num_classes": 10},
                                    "optimization": {"lr": 0.1, "batch_size": 8,
                                                     "scale": [0.5, 1.0], "ema": False}}))
    return str(path)


def test_flags_override_yaml_with_its_types(recipe):
    config = get_config(argv=["--config_path", recipe, "--lr", "0.5", "--ema", "true",
                              "--scale", "[0.2, 0.9]"])
    assert (config.lr, config.ema, config.scale, config.batch_size) == (0.5, True, [0.2, 0.9], 8)


@pytest.mark.parametrize("flags, message", [
    (["--batch_size", "1.5"], "expected an integer"),
    (["--lr", "fast"], "expected a number"),
    (["--learning_rate", "0.1"], "unrecognized arguments"),
])
def test_bad_flags_are_named(recipe, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        get_config(argv=["--config_path", recipe, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_misspelt_yaml_key_is_an_error_in_strict_mode(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("model: ghostnetv2_100\nbatch_sise: 8\n")
    known = {"model": "x", "batch_size": 1}
    assert get_config(argv=["--config_path", str(path)], extra_defaults=known).batch_sise == 8
    with pytest.raises(SystemExit):
        get_config(argv=["--config_path", str(path)], extra_defaults=known, strict=True)
    assert "'batch_sise' (did you mean 'batch_size'?)" in capsys.readouterr().err


def test_missing_config_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        get_config(argv=["--config_path", str(tmp_path / "nope.yaml")])
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "config", "*.yaml"))))
def test_shipped_recipes_hold_only_keys_train_py_reads(path):
    import train
    from src.tasks import get_task
    defaults = train.train_defaults(get_task(train.recipe_task(["--config_path", path])))
    config = get_config(argv=["--config_path", path], extra_defaults=defaults, strict=True)
    for key in ("model", "num_classes", "image_size", "batch_size", "epoch_size", "lr",
                "warmup_epochs", "weight_decay", "output_dir", "device_target", "data_path",
                "val_data_path"):
        assert key in config
