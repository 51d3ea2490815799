"""tools/rewrite_citations.py: what it rewrites, what it must leave alone, and that a rerun is a no-op.

Delete this file together with the tool once the rewrite has been applied. Samples write square
brackets as <> and spell the old name in two pieces, so the scans in tests/test_docs.py (and the
tool itself) do not find them in this file.

Run: .venv/bin/python -m pytest tests/test_rewrite_citations.py
"""
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("rewrite_citations", ROOT / "tools" / "rewrite_citations.py")
rc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rc)
OLD = "METH" + "OD"
SHARED = "sha" + "red"


def b(text: str) -> str:
    return text.replace("<", "[").replace(">", "]")


@pytest.mark.parametrize("old,new", [
    (f"see {OLD} §4.", "see docs/method.md §4."),
    (f"Paper §5 / §7 of {OLD}: rollouts", "Paper §5 / docs/method.md §7: rollouts"),
    (f"and §7 of {OLD} (predictor r)", "and docs/method.md §7 (predictor r)"),
    (f"(`../{SHARED}/{OLD}.md` §6 has it)", "(docs/method.md §6 has it)"),
    (f"/work/{SHARED}/{OLD}.md §2", "docs/method.md §2"),
    (f"(see {SHARED} {OLD}.md):", "(see docs/method.md):"),
    (f"{OLD} §5's clip", "docs/method.md §5's clip"),
    (f"{OLD}=grpo recipes/x.sh; {OLD}_LABELS; {OLD}S", f"{OLD}=grpo recipes/x.sh; {OLD}_LABELS; {OLD}S"),
])
def test_citations(old, new):
    assert rc.rewrite_citations(old) == new


def test_python_tags_only_in_comments_and_strings_and_not_in_shapes_code_or_latex():
    src = b('x = buf<C> + <C><0]  # weight decay 0 <P>, 0.01 <C>\n'
            '"""Shapes (N, C), C = 512, ``a<C>``, $x_<D>$ and $<C>$, tokens <PAD>, a shape <C, T>.\n'
            'Tags <C+D>, <P App. A.1>, <P, Dr.GRPO>, <P, C>, <C only>, (<P>: "quote"), <C form of P\'s fit>,\n'
            f'<C, {OLD} §2>, <P>(link-like) and <P: C = 8>.\n"""\n')
    want = b('x = buf<C> + <C><0]  # weight decay 0 <paper>, 0.01 <code>\n'
             '"""Shapes (N, C), C = 512, ``a<C>``, $x_<D>$ and $<C>$, tokens <PAD>, a shape <C, T>.\n'
             'Tags <code+ours>, <paper App. A.1>, <paper, Dr.GRPO>, <paper, code>, <code only>, (<paper>: "quote"), '
             "<code form of the paper's fit>,\n"
             '<code, docs/method.md §2>, <P>(link-like) and <paper: C = 8>.\n"""\n')
    new, notes = rc.rewrite_unit(src, "python")
    assert new == want
    kinds = sorted(note.split(":")[0] for _, note in notes)
    assert kinds == ["left as is (looks like a shape)", "lone letter kept inside a tag", "possessive rewritten"]


def test_markdown_tags_skip_code_math_and_link_definitions_but_citations_do_not():
    src = b("Prose <P> and `inline <C>` and $a_<C>$ and\n$$\nM<D>\n$$\n"
            f"```python\nx = y<C>  # <P>, {OLD} §3\n```\n<C>: https://example.org\n")
    want = b("Prose <paper> and `inline <C>` and $a_<C>$ and\n$$\nM<D>\n$$\n"
             "```python\nx = y<C>  # <P>, docs/method.md §3\n```\n<C>: https://example.org\n")
    assert rc.rewrite_unit(src, "markdown")[0] == want


def test_a_source_that_does_not_tokenize_is_reported_not_guessed():
    new, notes = rc.rewrite_unit(b('s = """open <C>\n'), "python")
    assert new == b('s = """open <C>\n') and "does not tokenize" in notes[0][1]


def _repo(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(b(f'"""Loss <P> (see {OLD} §5)."""\nbuf<C> = 1\n'), encoding="utf-8")
    (tmp_path / "notes.md").write_text("nothing to do here\n", encoding="utf-8")
    nb = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": [b(f"# T\n"), b(f"ours <D> ({OLD} §3)")]},
                    {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": [b("x = y<C>  # <C>\n")]}],
          "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "n.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "untracked.py").write_text(b("# <P>\n"), encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "pkg/m.py", "notes.md", "n.ipynb"], cwd=tmp_path, check=True)
    return tmp_path


def test_check_then_write_then_rerun_is_a_no_op(tmp_path, capsys):
    root = _repo(tmp_path)
    before = {p: (root / p).read_text(encoding="utf-8") for p in ("pkg/m.py", "n.ipynb", "untracked.py")}
    assert rc.main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "pkg/m.py:1:" in out and "n.ipynb cell 0:2:" in out and "n.ipynb cell 1:1:" in out
    assert "would change 3 line(s) in 2 file(s)" in out
    assert {p: (root / p).read_text(encoding="utf-8") for p in before} == before  # --check writes nothing

    assert rc.main(["--root", str(root)]) == 0
    assert (root / "pkg/m.py").read_text(encoding="utf-8") == b('"""Loss <paper> (see docs/method.md §5)."""\nbuf<C> = 1\n')
    nb = json.loads((root / "n.ipynb").read_text(encoding="utf-8"))
    assert nb["cells"][0]["source"] == ["# T\n", b("ours <ours> (docs/method.md §3)")]
    assert nb["cells"][1]["source"] == [b("x = y<C>  # <code>\n")]
    assert (root / "untracked.py").read_text(encoding="utf-8") == before["untracked.py"]
    capsys.readouterr()

    assert rc.main(["--check", "--root", str(root)]) == 0
    assert "would change 0 line(s) in 0 file(s)" in capsys.readouterr().out
