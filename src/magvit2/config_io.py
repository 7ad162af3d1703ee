"""Plain-data configs: nested dataclasses to and from dicts, YAML files and ``key=value`` overrides.

Every config in the package is a dataclass of plain fields (numbers, strings, lists, dicts and other
such dataclasses), so it can be written as JSON or YAML next to the weights and read back exactly.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass instance -> nested dict of plain values."""
    return dataclasses.asdict(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` (for other unions: the first non-None member)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if args else tp
    return tp


def _scalar(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against a field type ``tp`` (int, float, bool, str, lists; optional or not):
    ints where floats are expected and YAML 1.1 strings such as ``"1e-3"`` become floats; a value of
    the wrong kind is a ValueError naming the field. Other types (dicts, Any, unions) pass unchecked."""
    if value is None:
        return None
    base = _unwrap_optional(tp)
    kind = typing.get_origin(base) or base
    if base is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, (list, tuple)),
        tuple: isinstance(value, (list, tuple)),
        dict: isinstance(value, dict),
    }.get(kind, True)
    if not ok:
        words = {list: "list", tuple: "list", dict: "a mapping"}
        name = words.get(kind, getattr(kind, "__name__", str(kind)))
        raise ValueError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")
    return float(value) if base is float else value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config", field: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys and values of the wrong type (e.g. a
    string where a number belongs) raise a ValueError naming them (``where``: the file or source,
    ``field``: the dotted path of ``data`` inside it, for the messages)."""
    at = f"{where}: {field}" if field else where
    if not isinstance(data, dict):
        raise ValueError(f"{at}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{at}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        tp = _unwrap_optional(types_[name])
        if _is_dataclass_type(tp) and isinstance(value, dict):
            value = from_dict(tp, value, where=where, field=f"{field}.{name}" if field else name)
        elif not _is_dataclass_type(tp):
            value = _scalar(value, types_[name], f"{where}: {field}.{name}" if field else f"{where}: {name}")
        kwargs[name] = value
    return cls(**kwargs)


def describe_type(tp: Any) -> str:
    """A field type in words: ``int``, ``list of int``, ``int or list of int``, ``a mapping``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args if a is not type(None))
    if origin in (list, tuple) or tp in (list, tuple):
        elems = [a for a in args if a is not Ellipsis]
        return f"list of {describe_type(elems[0])}" if elems else "list"
    if origin is dict or tp is dict or _is_dataclass_type(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the type annotation ``tp`` (ints, floats, bools, strings, lists and
    tuples of them, unions, optional, mappings; a dataclass type accepts an instance or a mapping);
    floats given as ints or numeric strings become floats. A ValueError says ``where``, what was
    expected and what was found."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for member in (a for a in args if a is not type(None)):
            try:
                return check_value(value, member, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: expected {describe_type(tp)}, got {type(value).__name__} {value!r}")
    wrong = ValueError(f"{where}: expected {describe_type(tp)}, got {type(value).__name__} {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise wrong
        elems = [a for a in args if a is not Ellipsis]
        items = [check_value(v, elems[0], f"{where}[{i}]") if elems else v for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if origin is dict or tp is dict or _is_dataclass_type(tp):
        if not isinstance(value, dict) and not (_is_dataclass_type(tp) and isinstance(value, tp)):
            raise wrong
        return value
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise wrong from None
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp, True)
    if not ok:
        raise wrong
    return float(value) if tp is float else value


def check_fields(
    cls: type, data: Any, where: str, field: str = "", positive: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``data`` checked as the fields of dataclass ``cls``: a mapping, known names only, each value of
    its field's type (:func:`check_value`), the ``positive`` ones > 0. Returns the normalised mapping.
    A ValueError names ``where`` (the file or source), the field (dotted path under ``field``) and the
    expectation, e.g. ``m/config.json: quantizer.bits: expected int, got str 'x'``."""
    at = f"{where}: {field}" if field else where
    if not isinstance(data, dict):
        raise ValueError(f"{at}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ValueError(f"{at}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    out = {}
    for name, value in data.items():
        location = f"{where}: {field}.{name}" if field else f"{where}: {name}"
        value = check_value(value, hints[name], location)
        if name in positive and value is not None and not value > 0:
            raise ValueError(f"{location}: expected a number > 0, got {value!r}")
        out[name] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping (empty file: ``{}``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into dataclass ``cls`` (errors name the file)."""
    return from_dict(cls, read_yaml(path), where=str(path))


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write a dataclass config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _coerce(text: str, tp: Any, key: str) -> Any:
    """Parse the text of an override as YAML, then check it fits the field's type."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:  # unbalanced brackets, python tags, ...
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ValueError(f"--set {key}={text}: expected a plain YAML value ({problem})") from None
    if _unwrap_optional(tp) is str and value is not None and not isinstance(value, str):
        return text  # a string field given "123" or "true": the text as written
    return _scalar(value, tp, f"--set {key}={text}")


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a dataclass config; returns a new one."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        cls: Any = type(cfg)
        node = data
        for i, part in enumerate(parts):
            if not _is_dataclass_type(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
                known = sorted(f.name for f in dataclasses.fields(cls)) if _is_dataclass_type(cls) else []
                raise ValueError(f"--set {key}: unknown field {part!r}; known here: {known}")
            tp = _field_types(cls)[part]
            if i == len(parts) - 1:
                node[part] = _coerce(text, tp, key)
            else:
                cls = _unwrap_optional(tp)
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return from_dict(type(cfg), data)


def package_folder(name: str, where: str = "") -> Path:
    """The folder of installed package ``name`` (``a`` or ``a.b.c``), found without importing anything.

    Only the top-level name is looked up by the import system's finders (which read folders and
    metadata, and run no code of the package); sub-packages are folders below it. A ValueError naming
    ``where`` (the path as written) if there is no such package.
    """
    parts = name.split(".")
    if not name or not all(part.isidentifier() for part in parts):
        raise ValueError(f"path {where!r}: expected pkg://PACKAGE/path with a package name, got {name!r}")
    spec = importlib.machinery.PathFinder.find_spec(parts[0]) if parts[0] not in sys.modules else None
    if spec is None:  # already imported, or found by another finder (e.g. an editable install)
        spec = _top_level_spec(parts[0])
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    for part in parts[1:]:
        folders = [f / part for f in folders if (f / part).is_dir()]
    if not folders:
        raise ValueError(f"path {where!r}: expected an installed package {name!r}, found none")
    return folders[0]


def _top_level_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of top-level module ``name`` from every finder on ``sys.meta_path``; finding a
    top-level name imports nothing (only a dotted name imports its parents)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def resolve_path(path: str) -> str:
    """``pkg://package/rest`` -> the file inside the installed package; ``~`` expanded; else unchanged.

    The package is found without importing it or anything else (:func:`package_folder`), so a path in a
    command line or a config never runs code. Raises ValueError if the package is not installed.
    """
    if not path.startswith("pkg://"):
        return os.path.expanduser(path)
    package, _, rest = path[len("pkg://") :].partition("/")
    return str(package_folder(package, path) / rest)
