"""Config helpers: `get_config(arg)` argument parsing, typed overrides, loading by path.

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


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
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
        if key not in defaults:
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


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted `key: value` overrides (values may be strings, parsed to the key's type);
    unknown keys and wrong types are refused with one clear error."""
    config = ml_collections.ConfigDict(config.to_dict())
    flat = {}
    for dotted, raw in overrides.items():
        try:
            current = eval_dotted(config, dotted)
        except (KeyError, AttributeError):
            parent, _, _ = dotted.rpartition(".")
            known = sorted(eval_dotted(config, parent).keys()) if parent and _is_section(config, parent) else \
                sorted(config.keys())
            raise ValueError(f"Unknown config key {dotted!r}; known keys here: {known}.") from None
        flat[dotted] = raw if isinstance(raw, type(current)) or current is None else _coerce(str(raw), current, dotted)
    config.update_from_flattened_dict(flat)
    return config


def eval_dotted(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for name in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            raise KeyError(dotted)
        node = node[name]
    return node


def _is_section(config: ml_collections.ConfigDict, dotted: str) -> bool:
    try:
        return isinstance(eval_dotted(config, dotted), ml_collections.ConfigDict)
    except (KeyError, AttributeError):
        return False
