"""Where a run's settings come from: ``-p key value`` text, a notebook's parameters cell, a preset.

Not from the paper. One rule for ``dotslab train``, papermill and JupyterLab alike:

    Config defaults  <  the preset's fields  <  the parameters cell  <  explicit ``-p`` values

A parameters cell holds ``name: type = literal`` lines. ``-p`` values replace the cell's values of the
same name (papermill injects them as a cell right after it), so a value written in the cell or given
with ``-p`` always wins over the preset; ``None`` in the cell means "the preset's value" (or the
default's). So ``-p preset mini`` on 10_train gives the miniature (its cell leaves those fields None),
while ``preset = "mini"`` next to ``policy = "smollm2"`` in a cell gives what the cell says: SmolLM2.

Decisions:
  1. In a kernel, the config is built from ``preset`` and the names in ``globals()`` that are Config
     fields, not from IPython's input history: what the user sees in the parameters cell after running
     it is what the config gets. Our notebooks bind no Config field name after the parameters cell (a
     test checks), so re-running the config cell is harmless. An annotated name that nearly spells a
     field is refused as a typo.
  2. When the cell or ``-p`` replaces values the preset names, the config cell and ``dotslab train``
     print which (never silently).
  3. :func:`parse_value` is the one parser of command-line values (``dotslab train``, the TRL recipe,
     the benchmarks); it parses by the field's type, so ``3e-5`` is a float and ``123`` a run name.
"""
from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

from .config import Config, ConfigError, field_types, preset_values

_INT = re.compile(r"[+-]?\d[\d_]*")
_FLOAT = re.compile(r"[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _unquote(text: str) -> str | None:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            return str(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return text[1:-1]
    return None


def parse_value(text: str, key: str | None = None, kind: str | None = None) -> Any:
    """A command-line value as a user means it.

    With a known type (``kind``, or the type of Config field ``key``): 'str' keeps the text (quotes
    removed); 'int' reads ``12`` or ``1_000``; 'float' reads ``3e-5``, ``.5``, ``inf``; 'bool' reads
    true/false, yes/no, on/off, 1/0. A value that does not fit raises ConfigError naming the key.
    Without one (or with ``kind="literal"``, for keys that are not Config fields even if a name matches):
    true/false -> bool, none/null -> None, integers, floats (``1e-3`` too), ``[1, 2]`` / ``{"a": 1}`` /
    quoted strings as Python or JSON literals; anything else (``no``, ``colocate``) stays the text.
    """
    kind = kind or field_types().get(key or "")
    t = text.strip()
    if kind == "str":
        quoted = _unquote(t)
        return text if quoted is None else quoted
    if kind == "int" and _INT.fullmatch(t):
        return int(t)
    if kind == "float" and (_INT.fullmatch(t) or _FLOAT.fullmatch(t)):
        return float(t.replace("_", ""))
    if kind == "bool" and t.lower() in _BOOLS:
        return _BOOLS[t.lower()]
    if kind in ("int", "float", "bool"):
        want = {"int": "an integer", "float": "a number", "bool": "true or false"}[kind]
        raise ConfigError(f"{key or 'value'} must be {want}, got {text!r}")
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if _INT.fullmatch(t):
        return int(t)
    if _FLOAT.fullmatch(t):
        return float(t.replace("_", ""))
    if t[:1] in "[{(\"'":
        for parse in (json.loads, ast.literal_eval):
            try:
                return parse(t)
            except (ValueError, SyntaxError, TypeError):
                continue
    return text


# ---- parameters cells ---------------------------------------------------------------------------------
_PLAIN = (str, int, float, bool, type(None))


def literal_assignments(source: str) -> dict[str, Any] | None:
    """``{name: value}`` if every statement of ``source`` is ``name: type = literal``; None for any other cell."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return None
    out: dict[str, Any] = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value):
            return None
        try:
            out[node.target.id] = ast.literal_eval(node.value)
        except ValueError:
            return None
    return out or None


def notebook_parameters(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, annotated type names) of a notebook file's parameters cell (the code cell tagged
    ``parameters``); ({}, {}) when it has none."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            values = literal_assignments(source) or {}
            types = {n.target.id: ast.unparse(n.annotation) for n in ast.parse(source).body
                     if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            return values, types
    return {}, {}


# ---- the layering rule ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """A config and where its values came from."""
    config: Config
    preset: str
    explicit: dict[str, Any]                       # Config keys given with -p (replacing the cell's)
    replaced: dict[str, tuple[Any, Any]]           # key -> (preset value, value from the cell or -p)
    notebook_only: dict[str, Any] = field(default_factory=dict)  # names the notebook uses, not Config keys

    def summary(self) -> list[str]:
        """Human-readable lines: the preset, the explicit values, what replaced the preset, the config."""
        fmt = lambda d: ", ".join(f"{k}={v!r}" for k, v in d.items()) or "none"  # noqa: E731
        lines = [f"preset: {self.preset or 'none'}"
                 + (f" (sets {len(preset_values(self.preset))} fields)" if self.preset and preset_values(self.preset)
                    else " (names no field: the Config defaults)"),
                 f"set explicitly: {fmt(self.explicit)}"]
        if self.replaced:
            lines.append(self.replaced_line())
        default, flat = Config().to_flat(), self.config.to_flat()
        lines.append("config (fields that differ from the defaults): "
                     + fmt({k: v for k, v in flat.items() if v != default[k]}))
        return lines

    def replaced_line(self) -> str:
        return f"the parameters cell and -p replace these values of preset {self.preset!r}: " + ", ".join(
            f"{k} {old!r} -> {new!r}" for k, (old, new) in self.replaced.items())


def resolve(cell: Mapping[str, Any], explicit: Mapping[str, Any] | None = None, *,
            notebook_only: Collection[str] = ()) -> Resolved:
    """Config defaults < the preset's fields < ``cell`` < ``explicit``; raises ConfigError naming the key.

    ``explicit`` values replace the cell's of the same name, as papermill's injected cell does; ``None``
    means "not set" (the preset's value). ``preset`` is read from the result. Names in ``notebook_only``
    are set aside (not Config keys); any other unknown name raises.
    """
    set_aside, explicit = set(notebook_only), dict(explicit or {})
    values = {**cell, **explicit}
    preset = values.get("preset") or ""
    named = preset_values(preset) if preset else {}
    given = {k: v for k, v in values.items() if k not in set_aside and k != "preset" and v is not None}
    config = Config.from_flat({**named, **given}, ignore_private=False)
    replaced = {k: (named[k], v) for k, v in given.items() if k in named and v != named[k]}
    exp_cfg = {k: v for k, v in explicit.items() if k not in set_aside and k != "preset"}
    only = {k: v for k, v in values.items() if k in set_aside}
    return Resolved(config, preset, exp_cfg, replaced, only)


def from_namespace(namespace: Mapping[str, Any], *, exclude: Collection[str] = ()) -> Config:
    """The config of the notebook running in this kernel: call it as ``from_namespace(globals())``.

    Reads ``preset`` and every Config field name the kernel holds (the parameters cell's values, with
    papermill's injected ones), layered as the module docstring says; ``exclude`` names the notebook's own
    parameters (not Config keys). Raises ConfigError for a Config name bound to anything but a plain
    literal, and for an annotated name that is not a Config field but nearly spells one (a typo).
    """
    if "preset" not in namespace:
        raise ConfigError("no parameters cell has run in this kernel: run the notebook's first code cell "
                          "(tagged 'parameters') before building the config")
    fields = field_types()
    for name in namespace.get("__annotations__") or {}:  # the parameters cell's names (and any annotated later)
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.85)
        if name not in fields and name != "preset" and name not in exclude and close:
            raise ConfigError(f"{name} is not a Config field (did you mean {close[0]}?); a notebook's own "
                              f"parameter goes in the config cell's exclude=(...)")
    values = {k: namespace[k] for k in ("preset", *fields) if k in namespace and k not in exclude}
    for key, value in values.items():
        if not isinstance(value, _PLAIN):
            raise ConfigError(f"{key} holds a {type(value).__name__}, not a value: a cell after the parameters "
                              f"cell rebound it; run the parameters cell again")
    resolved = resolve(values)
    if resolved.replaced:
        print("dotslab:", resolved.replaced_line())
    return resolved.config
