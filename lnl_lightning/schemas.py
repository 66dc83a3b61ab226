"""Typed schemas of the config groups, derived from the components' own signatures.

A group's yaml lists the schema of its ``_target_`` first in its defaults
(``/schema.<target>@_here_``). The schema's keys, types and defaults are the constructor's: a
default is written once, in the code, and a value of the wrong type (``data.color_var=red``) or
outside a choice (``model.step=fast``: a ``Literal`` in the signature, an enum here) is refused
while the config is composed, with its key named.

Types OmegaConf cannot hold strictly stay open (``Any``) and are checked by the component:
booleans (OmegaConf would read ``2`` as true; :func:`check_booleans` refuses it when building),
unions such as ``float | Sequence[float]`` and factories such as an optimizer.

Schemas and their enums are made at run time, yet a composed config must pickle (DDP spawn,
submitit): each pickles as the call that makes it again (:func:`schema_of`, :func:`choice_of`),
both cached, so a process that unpickles a config rebuilds the same types.
"""

from __future__ import annotations

import copyreg
import enum
import functools
import inspect
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass
from importlib import import_module
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Optional, Union

from omegaconf import DictConfig, OmegaConf

from lnl_lightning.errors import ConfigError

GROUPS = ("data", "model", "net")  # the groups that build the project's own components
# Passed in by the run when it builds a component (train.build_networks, train.build_model):
# never a setting, so never in a schema
BUILT_BY_THE_RUN = frozenset(
    {
        "num_classes",  # from the data's BiasSpec
        "feature_extractor",
        "label_head",
        "bias_head",
        "bias_spec",
        "test_names",
        "val_names",
        "make_networks",
    }
)
PRIMITIVES = (int, float, str)
DISPLAY = "display"  # a method's node key for how reports draw it, never passed to its module


@dataclass
class Display:
    """How reports name and draw a method (``model.display``): its label, colour and marker."""

    label: str = "???"
    color: Optional[str] = None  # noqa: UP045 (runtime type) - a matplotlib colour; None: the next free one
    marker: str = "o"


class ChoiceType(enum.EnumType):
    """The type of the choice enums (pickled as the call to :func:`choice_of` that makes one)."""


class Choice(str, enum.Enum, metaclass=ChoiceType):
    """A choice among strings: equal to, hashed and printed as its string."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@functools.cache
def choice_of(name: str, allowed: tuple[str, ...]) -> type[Choice]:
    """The enum of the strings ``allowed`` for parameter ``name`` (one class per choice)."""
    return Choice(name, {c: c for c in allowed})


def _reduce_choice(cls: ChoiceType) -> Any:
    if cls is Choice:
        return "Choice"  # the base class, by its name in this module
    return choice_of, (cls.__name__, tuple(member.value for member in cls))


class SchemaType(type):
    """The type of the schemas (pickled as the call to :func:`schema_of` that makes one)."""


class Schema(metaclass=SchemaType):
    """The base of every derived schema; ``_made_by`` holds :func:`schema_of`'s arguments."""

    _made_by: tuple[str, frozenset[str]]


def _reduce_schema(cls: SchemaType) -> Any:
    if cls is Schema:
        return "Schema"
    return schema_of, cls._made_by


copyreg.pickle(ChoiceType, _reduce_choice)
copyreg.pickle(SchemaType, _reduce_schema)


def choices(literal: Any) -> tuple[str, ...]:
    """The strings a ``Literal[...]`` allows, in order."""
    return tuple(typing.get_args(literal))


def check_choice(key: str, value: Any, literal: Any) -> str:
    """``value`` as one of ``literal``'s strings, else a ConfigError naming ``key``."""
    allowed = choices(literal)
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {allowed}, got '{value}'")
    return str(value)


def _optional_of(annotation: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(annotation) in (Union, UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not NoneType]
        if len(rest) == 1 and len(rest) < len(typing.get_args(annotation)):
            return rest[0]
    return None


def field_type(name: str, annotation: Any) -> Any:
    """The schema type of a parameter: a primitive, an enum of a Literal, optional, or Any."""
    inner = _optional_of(annotation)
    if inner is not None:
        inner_type = field_type(name, inner)
        return Any if inner_type is Any else Optional[inner_type]  # noqa: UP045 (runtime type)
    if annotation in PRIMITIVES:
        return annotation
    if typing.get_origin(annotation) is Literal and all(
        isinstance(a, str) for a in choices(annotation)
    ):
        return choice_of(name, choices(annotation))
    return Any


def parameters(component: Any) -> dict[str, tuple[inspect.Parameter, Any]]:
    """``component``'s parameters with their resolved annotations.

    A class whose ``__init__`` passes ``**kwargs`` on to its base takes the base's too.
    """
    found: dict[str, tuple[inspect.Parameter, Any]] = {}
    for owner in component.__mro__ if inspect.isclass(component) else (component,):
        init = owner.__init__ if inspect.isclass(owner) else owner
        if init is object.__init__:
            break
        hints = typing.get_type_hints(init)
        passes_on = False
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.kind is parameter.VAR_KEYWORD:
                passes_on = True
            elif parameter.kind is not parameter.VAR_POSITIONAL and name != "self":
                found.setdefault(name, (parameter, hints.get(name, Any)))
        if not passes_on:
            break
    return found


def schema_name(target: str) -> str:
    """The schema's name in Hydra's ConfigStore (outside the groups: --help does not offer it)."""
    return f"schema.{target}"


@functools.cache
def schema_of(target: str, keys: frozenset[str] = frozenset()) -> type:
    """A dataclass of ``target``'s settings: its parameters with a default, and ``keys``.

    ``keys`` are those the yaml files set (kept even where the type stays open, e.g. an
    optimizer factory); a parameter the run passes in (:data:`BUILT_BY_THE_RUN`) is left out.
    A method that sets ``display`` gets it typed (:class:`Display`). The fields come from
    :func:`fields_of`, or from the disk cache :func:`remember_fields` filled.
    """
    fields = KNOWN_FIELDS.get((target, keys)) or fields_of(target, keys)
    made = [("_target_", str, field(default=target))]
    for name, spec, default in fields:
        kind = kind_of(name, spec)
        if isinstance(default, list):
            made.append((name, kind, field(default_factory=lambda d=default: list(d))))
        elif kind is Display:
            made.append((name, kind, field(default_factory=Display)))
        else:
            if isinstance(kind, type) and issubclass(kind, Choice) and default != "???":
                default = kind(default)
            made.append((name, kind, field(default=default)))
    schema = make_dataclass(
        f"{target.rpartition('.')[2]}Schema",
        made,
        bases=(Schema,),
        namespace={"_made_by": (target, keys)},
    )
    schema.__module__ = __name__
    return schema


# (target, keys) -> fields, read from the disk cache (schema_cache.py) instead of derived
KNOWN_FIELDS: dict[tuple[str, frozenset[str]], list] = {}


def fields_of(target: str, keys: frozenset[str] = frozenset()) -> list[list]:
    """``[name, kind, default]`` of each schema field, in JSON terms (:func:`spec_of`).

    Derived from the signature: this imports the component (and torch with it).
    """
    fields: list[list] = []
    for name, (parameter, annotation) in parameters(locate(target)).items():
        default = parameter.default
        if name in BUILT_BY_THE_RUN or (default is parameter.empty and name not in keys):
            continue
        if default is parameter.empty:
            default = "???"
        elif isinstance(default, (list, tuple)):
            default = list(default)
        elif isinstance(default, enum.Enum):
            default = default.value
        fields.append([name, spec_of(field_type(name, annotation)), default])
    if DISPLAY in keys:
        fields.append([DISPLAY, "display", None])
    return fields


PRIMITIVE_NAMES = {kind.__name__: kind for kind in PRIMITIVES}


def spec_of(kind: Any) -> Any:
    """A field's type in JSON terms: ``"int"``, ``["optional", ...]``, ``["choice", ...]``."""
    if kind is Display:
        return "display"
    if isinstance(kind, type) and issubclass(kind, Choice):
        return ["choice", *(member.value for member in kind)]
    if kind in PRIMITIVES:
        return kind.__name__
    inner = _optional_of(kind)
    if inner is not None:
        return ["optional", spec_of(inner)]
    return "any"


def kind_of(name: str, spec: Any) -> Any:
    """The type :func:`spec_of` wrote, for the parameter ``name``."""
    if spec == "display":
        return Display
    if isinstance(spec, list) and spec[0] == "choice":
        return choice_of(name, tuple(spec[1:]))
    if isinstance(spec, list) and spec[0] == "optional":
        return Optional[kind_of(name, spec[1])]  # noqa: UP045 (runtime type)
    return PRIMITIVE_NAMES.get(spec, Any)


def remember_fields(conf_dir: Path, targets: dict[str, frozenset[str]]) -> None:
    """Fill :data:`KNOWN_FIELDS` for ``targets`` from the disk cache, or derive them and write
    the cache, so that the next command composes its config without importing torch."""
    from lnl_lightning import schema_cache

    cached = schema_cache.load(conf_dir) or {}
    if not all(
        isinstance(cached.get(t), dict) and frozenset(cached[t].get("keys", ())) == keys
        for t, keys in targets.items()
    ):
        cached = {
            target: {"keys": sorted(keys), "fields": fields_of(target, keys)}
            for target, keys in targets.items()
        }
        schema_cache.save(conf_dir, cached)
    for target, keys in targets.items():
        KNOWN_FIELDS[target, keys] = cached[target]["fields"]


def locate(target: str) -> Any:
    """The class or function a ``_target_`` names."""
    module, _, name = target.rpartition(".")
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"_target_ {target} names nothing importable: {err}") from None


def targets_in(conf_dir: Path, groups: Sequence[str] = GROUPS) -> dict[str, frozenset[str]]:
    """Each project ``_target_`` the yaml files of ``groups`` name, with the keys set beside it."""
    found: dict[str, set[str]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, DictConfig):
            target = node.get("_target_")
            if isinstance(target, str) and target.startswith("lnl_lightning."):
                found.setdefault(target, set()).update(
                    k
                    for k in node
                    if isinstance(k, str) and not k.startswith("_") and k != "defaults"
                )
            for key in node:
                if key != "defaults":
                    visit(node._get_node(key))

    for group in groups:
        for path in sorted((conf_dir / group).rglob("*.yaml")):
            visit(OmegaConf.load(path))
    return {target: frozenset(keys) for target, keys in found.items()}


def check_booleans(node: DictConfig, target: Any) -> None:
    """Refuse a non-boolean value of a parameter typed ``bool``, naming its key."""
    settings = parameters(target)
    for name, value in node.items():
        if name in settings and settings[name][1] is bool and not isinstance(value, bool):
            key = ".".join(k for k in (node._get_full_key(""), str(name)) if k)
            raise ConfigError(f"{key} must be true or false, got {value!r}")
