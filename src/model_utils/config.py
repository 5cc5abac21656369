"""YAML recipes with command-line overrides (the ModelZoo model_utils pattern).

Every key of the yaml file is also a ``--key value`` flag; the flag's type is
the type of the yaml value, so ``--lr abc`` or ``--batch_size 1.5`` is an
error, as is a flag no yaml key declares. Keys may be nested one level in the
yaml (option groups) to keep recipes readable; flags stay flat.

    config = get_config(description="train GhostNetV2")
    config.lr, config.batch_size, ...
"""
import argparse
import ast
import difflib
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(ROOT, "config", "ghostnetv2_100_imagenet.yaml")


class Config(dict):
    """A dict whose keys are also attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key '{key}'") from None

    def __setattr__(self, key, value):
        self[key] = value


def load_yaml(path):
    """Read a recipe; nested groups are flattened (the group names are dropped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path} (pass --config_path FILE.yaml; "
                                f"recipes are in {os.path.join(ROOT, 'config')})")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys to values")
    flat = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) and not key.endswith("_dict") else [(key, value)]
        for sub_key, sub_value in items:
            if sub_key in flat:
                raise ValueError(f"config file {path}: key '{sub_key}' is set twice")
            flat[sub_key] = sub_value
    return flat


def _parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _parse_literal(text):
    """Lists, dicts and None-defaulted keys: a YAML literal ("[1, 2]", "null", "abc")."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise argparse.ArgumentTypeError(f"cannot parse '{text}'") from None


def _parse_float(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def _parse_int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def _flag_type(default):
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return _parse_int
    if isinstance(default, float):
        return _parse_float
    if isinstance(default, str):
        return str
    return _parse_literal


def build_parser(defaults, description="", helps=None):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config_path", default=DEFAULT_CONFIG, help="yaml recipe")
    for key, default in defaults.items():
        if key == "config_path":
            continue
        parser.add_argument(f"--{key}", type=_flag_type(default), default=default,
                            help=(helps or {}).get(key, " "))
    return parser


def unknown_keys_error(path, unknown, known):
    """A message naming recipe keys no script reads, with the likely intended key."""
    hints = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return (f"config file {path} has keys that nothing reads: {', '.join(hints)}. "
            "Fix the spelling or remove them.")


def get_config(description="", argv=None, extra_defaults=None, strict=False):
    """Parse --config_path, load it, then parse every other flag against its keys.

    extra_defaults: keys the calling script needs even if the yaml lacks them
    (the yaml wins where it has them).
    strict: a yaml key outside extra_defaults is an error (a misspelt key
    would otherwise be silently ignored).
    """
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config_path", default=DEFAULT_CONFIG)
    known, _ = pre.parse_known_args(argv)
    config_path = os.path.abspath(os.path.expanduser(known.config_path))
    defaults = dict(extra_defaults or {})
    try:
        recipe = load_yaml(config_path)
    except (FileNotFoundError, ValueError) as err:
        pre.error(str(err))
    unknown = set(recipe) - set(defaults) - {"config_path"}
    if strict and unknown:
        pre.error(unknown_keys_error(config_path, unknown, list(defaults)))
    defaults.update(recipe)
    parser = build_parser(defaults, description)
    args = parser.parse_args(argv)
    config = Config(vars(args))
    config.config_path = config_path
    return config


def config_to_yaml(config):
    return yaml.safe_dump(dict(config), sort_keys=False)
