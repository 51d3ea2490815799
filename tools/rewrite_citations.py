"""Point the repository's citations at docs/method.md and turn the old one-letter tags into words.

One-off migration (issue 13 §3): the specification used to live outside the repository as METHOD.md,
cited as "METHOD §n", "§n of METHOD", "../shared/METHOD.md §n" or "shared METHOD.md", with the tags
[P] (paper), [C] (authors' code) and [D] (dotslab decision). docs/method.md keeps the same §0-§8
numbering, so the rewrite is mechanical:

  citations  -> "docs/method.md §n" (a backtick-quoted old path before § loses its backticks)
  [P] [C] [D] -> [paper] [code] [ours]; combined and annotated forms keep their shape:
                 [P, C] -> [paper, code], [C+D] -> [code+ours], [P App. A.1] -> [paper App. A.1],
                 [C only] -> [code only]; inside such a tag, "P's" -> "the paper's"

Citations are rewritten anywhere in a file. Tags are rewritten only in prose: comments and strings of
.py files and of notebook code cells (found with ``tokenize``, so ``buf[C]`` in code is never touched),
and Markdown text outside fenced code, inline code and $...$ / $$...$$ math. A bracket that looks like
a shape, e.g. "[C, T]", is left alone; it and any lone P/C/D left inside a rewritten tag are printed
as "review" lines. In notebooks only the cells' source strings change.

Usage (from the repository root):
  python tools/rewrite_citations.py --check   # print every line that would change; exit 1 if any
  python tools/rewrite_citations.py           # rewrite tracked .py/.md/.ipynb files in place
Running it twice changes nothing the second time. docs/ and this file are skipped.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

SELF = "tools/rewrite_citations.py"
DOC = "docs/method.md"
CITATIONS = [
    (re.compile(r"`?(?:\.\./|/work/)?shared/METHOD\.md`?(?=\s*§)"), DOC),
    (re.compile(r"(?:\.\./|/work/)?shared/METHOD\.md"), DOC),
    (re.compile(r"\bshared METHOD\.md"), DOC),
    (re.compile(r"\bMETHOD\.md"), DOC),
    (re.compile(r"§(\d+) of METHOD\b(?![\w=.-])"), DOC + r" §\1"),
    (re.compile(r"\bMETHOD(?=\s*§)"), DOC),
]
WORD = {"P": "paper", "C": "code", "D": "ours"}
POSSESSIVE = {"P": "the paper's", "C": "the code's", "D": "dotslab's"}
TAG = re.compile(r"(?<![\w\])`$])\[(?P<lead>[PCD](?:\s*[,+/]\s*[PCD])*)(?![\w.'])(?P<rest>[^\[\]\n]*)\](?!\()")
IDENTIFIER = re.compile(r"[A-Za-z_][\w-]*")
NOT_PROSE_MD = re.compile(r"^(```|~~~).*?^\1[^\n]*$|(`+)[^`]*?\2|\$\$.*?\$\$|\$[^$\n]+\$|^\s*\[[^\]\n]+\]:",
                          re.M | re.S)
NOT_PROSE_PY = re.compile(r"(`+)[^`]*?\1|\$\$.*?\$\$|\$[^$\n]+\$", re.S)


def rewrite_citations(text: str) -> str:
    for pattern, repl in CITATIONS:
        text = pattern.sub(repl, text)
    return text


def _subtract(spans: list[tuple[int, int]], text: str, masks: re.Pattern) -> list[tuple[int, int]]:
    """Parts of ``spans`` not covered by a match of ``masks`` inside them."""
    out = []
    for a, b in spans:
        pos = a
        for m in masks.finditer(text, a, b):
            out.append((pos, m.start()))
            pos = m.end()
        out.append((pos, b))
    return [(a, b) for a, b in out if b > a]


def python_prose(text: str) -> list[tuple[int, int]]:
    """Character spans of comments and strings; raises tokenize.TokenError / SyntaxError."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    kinds = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    spans = [(starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1])
             for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type in kinds]
    return _subtract(spans, text, NOT_PROSE_PY)


def markdown_prose(text: str) -> list[tuple[int, int]]:
    return _subtract([(0, len(text))], text, NOT_PROSE_MD)


def rewrite_tags(text: str, prose: list[tuple[int, int]]) -> tuple[str, list[tuple[int, str]]]:
    """Rewrite tags that lie inside ``prose``; returns the text and (offset, note) review items."""
    edits, notes = [], []
    for m in TAG.finditer(text):
        if not any(a <= m.start() and m.end() <= b for a, b in prose):
            continue
        lead, rest = m.group("lead"), m.group("rest")
        if rest and rest[0] not in " ,:;":
            continue
        if rest.startswith(",") and all(IDENTIFIER.fullmatch(p.strip()) for p in re.split(r"[,+/]", lead + rest)):
            notes.append((m.start(), f"left as is (looks like a shape): {m.group(0)}"))
            continue
        new_rest = re.sub(r"\b([PCD])'s\b", lambda x: POSSESSIVE[x.group(1)], rest)
        if re.search(r"\b[PCD]\b", new_rest):
            notes.append((m.start(), f"lone letter kept inside a tag: {m.group(0)}"))
        new = "[" + re.sub(r"[PCD]", lambda x: WORD[x.group(0)], lead) + new_rest + "]"
        edits.append((m.start(), m.end(), new))
        if new_rest != rest:
            notes.append((m.start(), f"possessive rewritten: {m.group(0)} -> {new}"))
    for a, b, new in reversed(edits):
        text = text[:a] + new + text[b:]
    return text, notes


def rewrite_unit(text: str, kind: str) -> tuple[str, list[tuple[int, str]]]:
    """kind: 'python', 'markdown' or 'raw' (citations only)."""
    text = rewrite_citations(text)
    if kind == "raw":
        return text, []
    try:
        prose = python_prose(text) if kind == "python" else markdown_prose(text)
    except (tokenize.TokenError, SyntaxError) as err:
        return text, [(0, f"tags not checked, source does not tokenize ({err})")]
    return rewrite_tags(text, prose)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _report(where: str, old: str, new: str, notes: list[tuple[int, str]], out: list[str]) -> None:
    for n, (a, b) in enumerate(zip(old.split("\n"), new.split("\n")), 1):
        if a != b:
            out.append(f"{where}:{n}:\n  - {a.strip()}\n  + {b.strip()}")
    out.extend(f"{where}:{_line(new, off)}: review: {note}" for off, note in notes)


def process(root: Path, path: str, write: bool, out: list[str]) -> int:
    """Rewrite one file (or report what would change); returns the number of changed lines."""
    old = (root / path).read_text(encoding="utf-8")
    changed = 0
    if path.endswith(".ipynb"):
        nb = json.loads(old)
        for k, cell in enumerate(nb.get("cells", [])):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            kind = {"code": "python", "markdown": "markdown"}.get(cell.get("cell_type"), "raw")
            new, notes = rewrite_unit(src, kind)
            _report(f"{path} cell {k}", src, new, notes, out)
            if new != src:
                changed += sum(a != b for a, b in zip(src.split("\n"), new.split("\n")))
                cell["source"] = new.splitlines(keepends=True) if isinstance(cell["source"], list) else new
        new_file = json.dumps(nb, indent=1, ensure_ascii=False) + "\n" if changed else old
    else:
        new_file, notes = rewrite_unit(old, "python" if path.endswith(".py") else "markdown")
        _report(path, old, new_file, notes, out)
        changed = sum(a != b for a, b in zip(old.split("\n"), new_file.split("\n")))
    if write and new_file != old:
        (root / path).write_text(new_file, encoding="utf-8")
    return changed


def tracked_files(root: Path) -> list[str]:
    try:
        res = subprocess.run(["git", "ls-files", "-z", "--", "*.py", "*.md", "*.ipynb"], cwd=root,
                             capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"rewrite_citations: cannot list tracked files with git in {root}: {err}")
    return sorted(p for p in res.stdout.decode().split("\0")
                  if p and p != SELF and not p.startswith("docs/") and (root / p).is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="print what would change; exit 1 if anything would")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="repository root (default: the checkout holding this script)")
    args = ap.parse_args(argv)
    out: list[str] = []
    lines = files = 0
    for path in tracked_files(args.root):
        n = process(args.root, path, not args.check, out)
        lines, files = lines + n, files + (n > 0)
    print("\n".join(out))
    verb = "would change" if args.check else "changed"
    print(f"rewrite_citations: {verb} {lines} line(s) in {files} file(s); "
          f"{sum(': review: ' in o for o in out)} line(s) to review")
    return 1 if args.check and lines else 0


if __name__ == "__main__":
    sys.exit(main())
