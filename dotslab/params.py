"""Where a run's settings come from: ``-p key value`` text, a notebook's parameters cell, a preset.

Not from the paper. One rule for ``dotslab train``, papermill and JupyterLab alike:

    Config defaults  <  the notebook's parameters cell  <  the preset's fields  <  explicit values

Explicit values are ``-p`` pairs; inside a kernel they are the ``name = literal`` cells run after the
parameters cell, which is how papermill injects them. So ``-p preset tiny`` gives every field ``tiny``
names, ``-p total_steps 1`` beats it, and a notebook's own literals fill only what the preset leaves.

Decisions:
  1. In a kernel, the parameters cell and the cells after it are read from IPython's input history
     (``In``), not from ``globals()``: a later cell's loop variables (``for alpha, tau in ...``) or a
     reassigned name cannot leak into the config, and running the config cell again is harmless.
     Without history (nbval) only the parameters cell's annotated names are read, from globals(),
     and count as explicit.
  2. ``cpu_demo`` names no field, so under the notebooks' default preset their own values stand; when
     another preset replaces parameters-cell values, the config cell prints which (never silently).
  3. :func:`parse_value` is the one parser of command-line values (``dotslab train``, the TRL recipe,
     the benchmarks); it parses by the field's type, so ``3e-5`` is a float and ``123`` a run name.
"""
from __future__ import annotations

import ast
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
def literal_assignments(source: str, *, annotated: bool) -> dict[str, Any] | None:
    """``{name: value}`` if every statement of ``source`` assigns a literal to a name (``name: type = v``
    when ``annotated``, ``name = v`` otherwise); None for any other cell."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return None
    out: dict[str, Any] = {}
    for node in body:
        if annotated and isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            name, value = node.target.id, node.value
        elif not annotated and isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            return None
        try:
            out[name] = ast.literal_eval(value)
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
            values = literal_assignments(source, annotated=True) or {}
            types = {n.target.id: ast.unparse(n.annotation) for n in ast.parse(source).body
                     if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            return values, types
    return {}, {}


def cells_from_history(namespace: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters cell, explicit values) of the running kernel, read from its input history ``In``.

    The parameters cell is the last executed cell made only of ``name: type = literal`` lines; explicit
    values are those of ``name = literal``-only cells executed after it (papermill's injected cell).
    A kernel that keeps no history (nbval runs cells with ``store_history=False``) falls back to the
    annotated names in ``globals()``, all counted as explicit; a plain namespace without ``In`` or
    annotations, to its public literals.
    """
    history = namespace.get("In")
    for i in range(len(history) - 1, -1, -1) if isinstance(history, list) else ():
        cell = literal_assignments(history[i], annotated=True)
        if cell is not None:
            explicit: dict[str, Any] = {}
            for source in history[i + 1:]:
                explicit.update(literal_assignments(source, annotated=False) or {})
            return cell, explicit
    names = namespace.get("__annotations__") or ([] if isinstance(history, list) else
                                                  [k for k in namespace if not k.startswith("_")])
    if not names:
        raise ConfigError("no parameters cell has run in this kernel: run the notebook's first code cell "
                          "(tagged 'parameters') before building the config")
    return {}, {k: namespace[k] for k in names
                if k in namespace and isinstance(namespace[k], (str, int, float, bool))}


# ---- the layering rule ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """A config and where its values came from."""
    config: Config
    preset: str
    explicit: dict[str, Any]                       # Config keys set explicitly (beat the preset)
    replaced: dict[str, tuple[Any, Any]]           # key -> (parameters-cell value, preset value)
    notebook_only: dict[str, Any] = field(default_factory=dict)  # names the notebook uses, not Config keys

    def summary(self) -> list[str]:
        """Human-readable lines: the preset, the explicit values, what the preset replaced, the config."""
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
        return f"preset {self.preset!r} replaced these parameters-cell values: " + ", ".join(
            f"{k} {old!r} -> {new!r}" for k, (old, new) in self.replaced.items())


def resolve(cell: Mapping[str, Any], explicit: Mapping[str, Any], *,
            notebook_only: Collection[str] = ()) -> Resolved:
    """Config defaults < ``cell`` < the preset's fields < ``explicit``; raises ConfigError naming the key.

    ``preset`` is read from ``explicit``, else from ``cell``. Names in ``notebook_only`` are set aside
    (not Config keys); any other unknown name raises.
    """
    set_aside = set(notebook_only)
    preset = explicit.get("preset", cell.get("preset")) or ""
    named = preset_values(preset) if preset else {}
    cell_cfg = {k: v for k, v in cell.items() if k not in set_aside and k != "preset"}
    exp_cfg = {k: v for k, v in explicit.items() if k not in set_aside and k != "preset"}
    merged = {**{k: v for k, v in cell_cfg.items() if k not in named}, **named, **exp_cfg}
    config = Config.from_flat(merged, ignore_private=False)
    replaced = {k: (v, named[k]) for k, v in cell_cfg.items() if k in named and k not in exp_cfg and v != named[k]}
    only = {k: v for k, v in {**cell, **explicit}.items() if k in set_aside}
    return Resolved(config, preset, exp_cfg, replaced, only)


def from_namespace(namespace: Mapping[str, Any], *, exclude: Collection[str] = ()) -> Config:
    """The config of the notebook running in this kernel: call it as ``from_namespace(globals())``.

    Built from the parameters cell's names only (plus explicit values injected after it), layered as
    the module docstring says; ``exclude`` names parameters-cell entries that are not Config keys.
    """
    cell, explicit = cells_from_history(namespace)
    known = set(field_types()) | set(cell)
    resolved = resolve(cell, {k: v for k, v in explicit.items() if k in known}, notebook_only=exclude)
    if resolved.replaced:
        print("dotslab:", resolved.replaced_line())
    return resolved.config
