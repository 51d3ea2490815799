"""docs/method.md is the method's home: citations resolve, nothing cites the old out-of-repo spec or tags.

(a) every `docs/method.md §N` (optionally `§N "Subsection"`) in tracked .py, .md and .ipynb files, and
    every `§N` inside docs/method.md, names a heading that exists;
(b) no tracked file outside docs/ points at the specification that used to live outside the repository;
(c) no tracked .py file uses the old one-letter source tags (P / C / D in square brackets) in its
    comments or strings; the letters themselves (shapes like "(N, C)", "C = 512") are fine.
Samples below write brackets as <> so this file does not contain what it forbids.

Run: .venv/bin/python -m pytest tests/test_docs.py
"""
import io
import json
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METHOD_DOC = ROOT / "docs" / "method.md"
EXEMPT: set[str] = set()   # files allowed to name the old forms (none since the migration was applied)

SECTION = re.compile(r"^## §(\d+)\. (\S.*)$", re.M)
SUBSECTION = re.compile(r"^### (\S.*)$", re.M)
CITATION = re.compile(r'docs/method\.md`?\s*§(\d+)(?:\s+"([^"\n]+)")?')
INTERNAL = re.compile(r'§(\d+)(?:\s+"([^"\n]+)")?')
ANCHOR = re.compile(r"docs/method\.md#([\w-]+)")
OLD = "METH" + "OD"  # spelled in two pieces so the scan of this file does not find it
OLD_SPEC = re.compile(rf"(?:\.\./|/work/)shared/|shared/{OLD}|{OLD}\.md|\b{OLD}\s*§|§\d+ of {OLD}\b")
OLD_TAG = re.compile(r"(?<![\w\])`$])\[[PCD](?:\]|[+/]|\s+\S|,(?:\s*[PCD]\]|(?!\s*[A-Za-z][\w-]*\])))")
# The section topics, in the order of the old numbering that existing citations use.
TOPICS = ["symbols", "adaptive difficulty", "predicting difficulty", "dots selection", "rollout replay",
          "loss", "one round", "measured", "traps", "miniature"]


def tracked(*patterns: str) -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: tracked files unknown")
    out = subprocess.run(["git", "ls-files", "-z", "--", *patterns], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p and (ROOT / p).is_file()]


def text_units(path: str) -> list[tuple[str, str]]:
    """(where, text) pieces of a file: the whole file, or each notebook cell's source."""
    raw = (ROOT / path).read_text(encoding="utf-8")
    if not path.endswith(".ipynb"):
        return [(path, raw)]
    cells = json.loads(raw)["cells"]
    return [(f"{path} cell {k}", "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for k, c in enumerate(cells)]


def sections(doc: str) -> dict[int, tuple[str, set[str]]]:
    """§ number -> (title, subsection titles) of docs/method.md."""
    heads = list(SECTION.finditer(doc))
    out = {}
    for k, m in enumerate(heads):
        body = doc[m.end():heads[k + 1].start() if k + 1 < len(heads) else len(doc)]
        out[int(m.group(1))] = (m.group(2).strip(), {s.strip() for s in SUBSECTION.findall(body)})
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def unresolved(text: str, where: str, secs: dict, pattern: re.Pattern = CITATION) -> list[str]:
    bad = []
    for m in pattern.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        n, name = int(m.group(1)), m.group(2)
        if n not in secs:
            bad.append(f"{where}:{line}: §{n} is not a section of docs/method.md")
        elif name is not None and name not in secs[n][1] and name != secs[n][0]:
            bad.append(f"{where}:{line}: §{n} has no subsection {name!r} (has {sorted(secs[n][1])})")
    return bad


def old_tags(source: str, where: str) -> list[str]:
    """Old tags in a Python source's comments and strings (code such as ``buf[C]`` is not prose)."""
    kinds = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    hits = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in kinds:
            for m in OLD_TAG.finditer(tok.string):
                line = tok.start[0] + tok.string.count("\n", 0, m.start())
                end = tok.string.find("]", m.start())
                hits.append(f"{where}:{line}: {tok.string[m.start():end + 1 if end >= 0 else m.end()]!r}")
    return hits


def sample(text: str) -> str:
    return text.replace("<", "[").replace(">", "]")


# ---- the detectors themselves ------------------------------------------------------------
SECS = {2: ("Predicting difficulty", {"Quality metric", "Embedding"}), 4: ("Rollout replay", set())}


def test_citation_checker_flags_missing_sections_and_subsections():
    doc = "docs/method" + ".md"  # in two pieces: the repository scan must not see these samples
    assert unresolved(f'see {doc} §2 "Quality metric" and {doc} §4', "x", SECS) == []
    assert unresolved(f"(`{doc}` §4)", "x", SECS) == []
    bad = unresolved(f'{doc} §9 and\n{doc} §2 "Quality metrics"', "x.py", SECS)
    assert len(bad) == 2 and bad[0].startswith("x.py:1: §9") and bad[1].startswith("x.py:2: §2 has no")


def test_slug_matches_githubs_anchors():
    assert slug("§6. One round, as the trainer runs it") == "6-one-round-as-the-trainer-runs-it"
    assert slug("History mode (dotslab extension)") == "history-mode-dotslab-extension"


def test_old_spec_pattern():
    for s in [f"see {OLD} §4", f"({OLD} §2)", f"shared/{OLD}.md", f"see shared {OLD}.md",
              f"Paper §5 / §7 of {OLD}: rollouts", "(`../" + "shared/X.md` §6)"]:
        assert OLD_SPEC.search(s), s
    for s in ["docs/method.md §4", f"{OLD}S = (...)", f"{OLD}_LABELS", f"{OLD}=grpo recipes/x.sh", "method §4"]:
        assert not OLD_SPEC.search(s), s


@pytest.mark.parametrize("src", [
    '"""Weight decay. Paper 0 <P>, code 0.01 <C>."""',
    "x = 1  # mean over all completion tokens <C>",
    '"""Fit on the references, clipped to <0,1> <C+D>."""',
    '"""Reuse reference groups <P App. A.1>."""',
    "\"\"\"'mean': r - mean <P, Dr.GRPO>.\"\"\"",
    '"""Affine correction <C only> is fitted."""',
    '"""softmax(s / tau)  <P, C>."""',
    '"""fully fresh (<P>: "only replays once the buffer holds")"""',
    '"""<P/C> agree."""',
    'msg = f"adapter <D> {x}"',
])
def test_old_tag_detector_flags_tags(src):
    assert old_tags(sample(src), "x.py"), src


@pytest.mark.parametrize("src", [
    '"""logits (N, C) and C = 512 groups."""',
    "C = 512",
    "x = buf<C>",
    "y = <C>  # a list in code is not a tag",
    '"""Tensor<C>, tokens <PAD> and <UNK>."""',
    '"""a shape <C, T> in brackets"""',
    '"""``<C>`` and $x_<D>$"""',
    "z = x<P, C>  # indexing",
    '"""<paper>, <code>, <ours>, <code+ours>, <paper App. A.1>"""',
])
def test_old_tag_detector_ignores_letters_code_and_new_tags(src):
    assert old_tags(sample(src), "x.py") == [], src


# ---- the repository ------------------------------------------------------------------------
def test_method_doc_sections_are_numbered_0_to_9_in_the_old_order():
    secs = sections(METHOD_DOC.read_text(encoding="utf-8"))
    assert sorted(secs) == list(range(len(TOPICS)))
    for n, topic in enumerate(TOPICS):
        assert topic in secs[n][0].lower(), f"§{n} is {secs[n][0]!r}, expected the topic {topic!r}"
    assert "History mode (dotslab extension)" in secs[2][1]


def test_method_doc_uses_only_its_own_tags():
    doc = METHOD_DOC.read_text(encoding="utf-8")
    used = set(re.findall(r"`\[([a-z]+)", doc))
    assert used == {"paper", "code", "ours"}, used


def test_every_citation_resolves():
    doc = METHOD_DOC.read_text(encoding="utf-8")
    secs = sections(doc)
    anchors = {slug(h) for h in re.findall(r"^#{2,3} (.+)$", doc, re.M)}
    bad = unresolved(doc, "docs/method.md", secs, INTERNAL)
    for path in tracked("*.py", "*.md", "*.ipynb"):
        for where, text in text_units(path):
            bad += unresolved(text, where, secs)
            bad += [f"{where}: no heading has the anchor #{a}" for a in ANCHOR.findall(text) if a not in anchors]
    assert not bad, "citations that resolve to no heading of docs/method.md:\n" + "\n".join(bad)


def test_nothing_cites_the_specification_outside_the_repo():
    bad = []
    for path in tracked():
        if path.startswith("docs/") or path in EXEMPT:
            continue
        try:
            text = (ROOT / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (figures)
        bad += [f"{path}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}" for m in OLD_SPEC.finditer(text)]
    assert not bad, ("cite docs/method.md §n instead:\n" + "\n".join(bad))


def test_no_old_tags_in_python():
    bad = []
    for path in tracked("*.py"):
        if path not in EXEMPT:
            bad += old_tags((ROOT / path).read_text(encoding="utf-8"), path)
    assert not bad, ("old one-letter tags; use [paper] / [code] / [ours] (docs/method.md legend):\n" + "\n".join(bad))
