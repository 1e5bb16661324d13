"""Load one section of params.yaml into a frozen dataclass, rejecting unknown or missing keys.

A typo in params.yaml then fails at load time with the key named, not deep inside a stage.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from stages.errors import PipelineInputError

DEFAULT_PARAMS_PATH = Path("params.yaml")

T = TypeVar("T")


def read_params_file(path: Path = DEFAULT_PARAMS_PATH) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except FileNotFoundError:
        raise PipelineInputError(f"{path}: params file not found") from None
    except yaml.YAMLError as error:
        raise PipelineInputError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(content, dict):
        raise PipelineInputError(f"{path}: expected a mapping of sections, found {content!r}")
    return content


def section_from_mapping(cls: type[T], values: Any, where: str) -> T:
    """Build dataclass `cls` from `values`, checking every key and its type."""
    if not isinstance(values, dict):
        raise PipelineInputError(f"{where}: expected a mapping, found {values!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PipelineInputError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name not in values:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise PipelineInputError(f"{where}.{name}: missing (required)")
            continue
        kwargs[name] = _coerce(values[name], hints[name], f"{where}.{name}")
    return cls(**kwargs)


def load_section(cls: type[T], section: str, path: Path = DEFAULT_PARAMS_PATH) -> T:
    content = read_params_file(path)
    if section not in content:
        raise PipelineInputError(f"{path}: section '{section}' is missing")
    return section_from_mapping(cls, content[section], f"{path}:{section}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        # A nested section, such as model.cnn: same checks, with its path in the message.
        return section_from_mapping(annotation, value, where)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _coerce(value, option, where)
            except PipelineInputError as error:
                errors.append(str(error))
        raise PipelineInputError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            allowed = ", ".join(repr(arg) for arg in args)
            raise PipelineInputError(f"{where}: expected one of {allowed}, found {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise PipelineInputError(f"{where}: expected a list, found {value!r}")
        return tuple(_coerce(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineInputError(f"{where}: expected a number, found {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PipelineInputError(f"{where}: expected an integer, found {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise PipelineInputError(f"{where}: expected true or false, found {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise PipelineInputError(f"{where}: expected a string, found {value!r}")
        return value
    raise TypeError(f"unsupported params annotation {annotation!r} at {where}")
