"""Config helpers: `get_config(arg)` argument parsing, validation of overrides, loading by path.

A config file is `configs/<paper>/<exp>.py` exposing `get_config(arg: str | None = None) -> ConfigDict`.
`arg` is a comma-separated list of `key=value` pairs or bare variant names, e.g. "smoke" or
"variant=draft,smoke=True".
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any

import ml_collections


def parse_arg(arg: str | None, lazy: bool = False, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses "a=1,b=x,smoke" into a ConfigDict over `defaults`, with types checked against them.

    A bare word `w` means `w=True` when `w` is a boolean default, else `variant=w` when a `variant`
    default exists. Unknown keys raise one ValueError naming the allowed ones.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    if not arg:
        return result
    for item in (part.strip() for part in arg.split(",")):
        if not item:
            continue
        if "=" in item:
            key, raw = (s.strip() for s in item.split("=", 1))
        elif isinstance(defaults.get(item), bool):
            key, raw = item, "True"
        elif "variant" in defaults:
            key, raw = "variant", item
        else:
            key, raw = item, "True"
        if key not in defaults and not lazy:
            raise ValueError(
                f"Unknown config argument {key!r} in {arg!r}; allowed: {sorted(defaults)}.")
        result[key] = _coerce(raw, defaults.get(key), key)
    return result


def _coerce(raw: str, default: Any, key: str) -> Any:
    if isinstance(default, str) or default is None:
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"Config argument {key}={raw!r} is not a valid {type(default).__name__}.") from None
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ValueError(f"Config argument {key}={raw!r} must be True or False.")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, type(default)):
        raise ValueError(f"Config argument {key}={raw!r} must be a {type(default).__name__}.")
    return value


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]`, the form launch scripts take on `--config`."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist; pass --config path/to/config.py[:arg].")
    module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path!r} defines no get_config(arg).")
    config = module.get_config(arg or None)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Applies dotted `key=value` overrides, refusing unknown keys and wrong types (one clear error)."""
    config = ml_collections.ConfigDict(config.to_dict())
    for dotted, raw in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for name in parents:
            if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
                raise ValueError(f"Unknown config key {dotted!r}; {name!r} is not a section of this config.")
            node = node[name]
        if leaf not in node:
            raise ValueError(f"Unknown config key {dotted!r}; known keys here: {sorted(node.keys())}.")
        node[leaf] = _coerce(raw, node[leaf], dotted) if not isinstance(raw, type(node[leaf])) else raw
    return config


def validate_against(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, where: str = "") -> None:
    """Raises one ValueError if `config` has a key `reference` lacks, or a value of another type."""
    for key in config.keys():
        path = f"{where}.{key}" if where else key
        if key not in reference:
            raise ValueError(f"Unknown config key {path!r}; known keys: {sorted(reference.keys())}.")
        value, expected = config[key], reference[key]
        if isinstance(expected, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ValueError(f"Config key {path!r} must be a section, got {type(value).__name__}.")
            validate_against(value, expected, path)
        elif expected is not None and value is not None and not _same_kind(value, expected):
            raise ValueError(
                f"Config key {path!r} must be {type(expected).__name__}, got {type(value).__name__} ({value!r}).")


def _same_kind(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        return isinstance(value, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(expected, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(expected))
