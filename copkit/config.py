"""Configuration files: YAML or TOML into typed, frozen dataclasses, strictly.

Every configuration of the library is a dataclass (:class:`copkit.comae.CoMAEConfig`,
:class:`copkit.recipe.TrainConfig`, the profiles of :mod:`copkit.profiles`, the stages of
:mod:`copkit.cli`). :func:`build` fills one from a mapping read from a file and refuses

- a key the dataclass does not have (``model.widht: unknown key; known keys: ...``),
- a value of the wrong type (``train.steps: expected int, got str '1e4'``),
- a required key that is missing,

naming the key by its dotted path, so a typo never silently falls back to a default.
``tuple`` fields take lists, ``float`` fields take integers, ``X | None`` fields take ``null``
(YAML) or may be left out when their default is None (TOML has no null).

:func:`config_hash` names what a configuration makes: a training run's folder
(:func:`copkit.checkpoint.run_folder`) and a shipped model's file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar, Union

import yaml

__all__ = ["ConfigError", "read_config", "build", "load", "to_dict", "dump_yaml", "jsonable",
           "config_hash"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping does not fit its dataclass; the message names the key."""


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` or ``.toml`` file (top level must be a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    else:
        raise ConfigError(f"{path}: a config file must end in .toml, .yaml or .yml")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got "
                          f"{type(data).__name__}")
    return data


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: null is not allowed here; expected {_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: expected {_name(tp)}, got "
                          f"{type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a section (a mapping of keys) for {tp.__name__}, "
                              f"got {type(value).__name__} {value!r}")
        return build(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} "
                              f"{value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: fields of type {_name(tp)} cannot be read from a config file")


def build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """The dataclass ``cls`` filled from ``data``, every value checked against its field's type.

    Example:
        >>> from copkit.recipe import TrainConfig
        >>> build(TrainConfig, {"steps": 10, "batch_size": 4, "betas": [0.9, 0.99]}).betas
        (0.9, 0.99)
        >>> build(TrainConfig, {"steps": 10, "lr_": 1.0})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        copkit.config.ConfigError: lr_: unknown key; known keys: steps, batch_size, lr, ...
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    prefix = f"{where}." if where else ""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; known keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # the dataclass's own checks (__post_init__)
        msg = str(err)
        key = msg.split(":", 1)[0]  # "steps: must be ..." names a field: section.steps
        raise ConfigError(f"{where}.{msg}" if where and key in fields
                          else f"{where or cls.__name__}: {msg}") from None


def load(cls: type[T], path: str | Path) -> T:
    """:func:`read_config` then :func:`build`; errors name the file."""
    try:
        return build(cls, read_config(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts and lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    """A dataclass as YAML that :func:`build` reads back to an equal object."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None, width=100)


def jsonable(obj: Any) -> Any:
    """A configuration (dataclasses, mappings, lists and tuples, paths; nested) as plain JSON
    values.

    A dataclass field marked ``hash_if_set`` in its metadata (added after runs were made with the
    dataclass) is left out while it holds its default, so the configurations that existed before
    the field keep their hashes.

    Example:
        >>> from copkit.recipe import TrainConfig
        >>> "precision" in jsonable(TrainConfig(steps=1, batch_size=1))
        False
        >>> jsonable(TrainConfig(steps=1, batch_size=1, precision="bf16"))["precision"]
        'bf16'
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("hash_if_set") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(config: Any) -> str:
    """SHA-256 of a configuration (dataclasses and dicts, nested) in canonical JSON
    (:func:`jsonable`, keys sorted): 64 hex digits.

    Two configurations hash equal exactly when every field is equal; runs and shipped models are
    named with the first 8 digits.

    Example:
        >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
        True
        >>> len(config_hash({"a": 1}))
        64
    """
    text = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
