"""Answer formats: what a question asks the policy for, and where the answer sits in a completion.

The paper scores the final answer with a binary rule-based reward (arXiv 2506.05316 §2, §5); which
rule fits depends on what the question asks for. A question's *answer format* decides both the
instruction that follows its prompt and how :mod:`dotslab.rewards` extracts and checks the answer:

  ======  ===============================================  =========================================
  format  default instruction                              extraction and check under ``reward auto``
  ======  ===============================================  =========================================
  number  Give only the final answer as a number.          last number (inside the last ``\\boxed{}``
                                                           if any), equal as numbers (exact match)
  text    Give only the final answer.                      answer span; equal up to case and spaces
  list    Give only the final answer, as a comma-          answer span split at commas (brackets and
          separated list.                                  quotes optional); items equal, in order
  math    Reason step by step, and put your final answer   math-verify on the text it parses: the
          within \\boxed{}.                                answer tag, else the whole completion,
                                                           else the answer span
  scratch (none: the miniature policy was pretrained on     the text after the last ``>``, equal as a
  pad     the bare question)                               string of digits (the ``addition`` task)
  ======  ===============================================  =========================================

The *answer span* (:func:`answer_span`) is the first found of: the last ``<answer>...</answer>``
(reasoning-gym's own format), the last ``\\boxed{...}``, the rest of the line after the last "answer
is" / "Answer:", the last non-empty line. reasoning-gym questions keep their generator's scorer; the
format picks their instruction and extraction.

Where a question's format comes from (:func:`answer_format`): ``metadata["answer_format"]`` (set by the
generators, by a file's ``answer_format`` column or ``load_file(..., answer_format=...)``, and ``math``
for ``hf:`` tasks), else a guess from the gold answer (:func:`guess_format`). ``metadata["instruction"]``
replaces the format's instruction for one question.

Deviations / decisions:
  1. The paper's pools are math only (one format, math-verify); the other formats serve the
     built-in arithmetic, reasoning-gym and users' own files.
  2. Extraction may look at the gold answer's shape, never its content: a span keeps a trailing full
     stop, quotes or ``*``/backtick marks only where the gold answer has them, and runs over several
     lines only when the gold answer does.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Mapping

from .records import Question

INSTRUCTIONS: Mapping[str, str] = {
    "number": "Give only the final answer as a number.",
    "text": "Give only the final answer.",
    "list": "Give only the final answer, as a comma-separated list.",
    "math": "Reason step by step, and put your final answer within \\boxed{}.",
    "scratchpad": "",
}
"""Default instruction per answer format; the keys are the valid formats."""
ANSWER_FORMATS = tuple(INSTRUCTIONS)

# a '-' is a sign only when not preceded by a word char or closing bracket ("10-3" is a subtraction)
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+/\d+(?![\d.])|\d+(?:\.\d+)?|\.\d+)")
_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_MARKER = re.compile(r"\banswer(?:\s+is\b|\s*\**\s*:)\s*:?", re.IGNORECASE)  # "The answer is", "**Answer:**"
_LATEX = re.compile(r"[\\$^{}]")
_WRAPPERS = ("**", "*", "`", '"', "'")


# ---- formats and instructions ------------------------------------------------------------------
def is_number(text: str) -> bool:
    """True for one plain number: '-4', '3.5', '.5', '1,234', '3/4' (not '1,2,3', not '1e5')."""
    return bool(_NUMBER.fullmatch(text.strip()))


def guess_format(answer: str) -> str:
    """The format a gold answer suggests: number if it is one, math if it holds LaTeX, else text.

    Lists are never guessed ('1, 2' may be one answer); a file says ``answer_format: list``.
    """
    if is_number(answer):
        return "number"
    return "math" if _LATEX.search(answer) else "text"


def answer_format(question: Question) -> str:
    """``question.metadata['answer_format']`` when set, else :func:`guess_format` of its answer."""
    fmt = question.metadata.get("answer_format")
    if fmt is None:
        return guess_format(question.answer)
    if fmt not in INSTRUCTIONS:
        raise ValueError(f"question {question.id!r}: answer_format {fmt!r} is not one of {', '.join(ANSWER_FORMATS)}")
    return fmt


def instruction(question: Question) -> str:
    """The text asking for the answer: ``metadata['instruction']`` when non-empty, else the format's default."""
    own = question.metadata.get("instruction")
    return own if isinstance(own, str) and own.strip() else INSTRUCTIONS[answer_format(question)]


# ---- extraction ----------------------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces matched (unclosed: the rest of the text)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    begin = end = start + len("\\boxed{")
    depth = 1
    while end < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        end += 1
    return text[begin:end - 1] if depth == 0 else text[begin:]


def last_tagged(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>``, stripped (reasoning-gym's answer format)."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def extract_last_number(text: str) -> str | None:
    """Last number in ``text`` (inside the last ``\\boxed{}`` if that holds one), commas removed.

    Handles '-4', '3.5', '.5', '1,234', '3/4' and '\\frac{3}{4}'; returns None when there is none.
    """
    text = _FRAC.sub(r"\1/\2", text)
    for scope in (last_boxed(text), text):
        if scope:
            found = _NUMBER.findall(scope)
            if found:
                return found[-1].replace(",", "")
    return None


def number_answer(completion: str) -> str | None:
    """The number a completion answers: the last one in its last answer tag, else in the whole text."""
    tagged = last_tagged(completion)
    return extract_last_number(tagged if tagged is not None else completion)


def to_fraction(text: str | None) -> Fraction | None:
    """``text`` as an exact number ('1,234' -> 1234, '3/4'), or None."""
    if text is None:
        return None
    try:
        return Fraction(text.strip().replace(",", ""))
    except (ValueError, ZeroDivisionError, OverflowError):  # ValueError also covers >4300-digit ints
        return None


def _clean(span: str, gold: str) -> str | None:
    """Strip a trailing full stop and wrapping quotes / ``*`` / backticks the gold answer does not have."""
    text, gold = span.strip(), gold.strip()
    previous = None
    while text != previous:
        previous = text
        if text.endswith(".") and not gold.endswith("."):
            text = text[:-1].rstrip()
        for mark in _WRAPPERS:
            if text.startswith(mark) and not gold.startswith(mark):
                text = text[len(mark):].lstrip()
            if text.endswith(mark) and not gold.endswith(mark):
                text = text[:-len(mark)].rstrip()
    return text or None


def answer_span(completion: str, gold: str) -> str | None:
    """The answer a completion gives for a word, phrase, sentence or list (see the module docstring)."""
    for found in (last_tagged(completion), last_boxed(completion)):
        if found is not None:
            return _clean(found, gold)
    several_lines = "\n" in gold.strip()
    markers = list(_MARKER.finditer(completion))
    if markers:
        rest = completion[markers[-1].end():].strip()
        return _clean(rest if several_lines else rest.split("\n", 1)[0], gold)
    if several_lines:
        return _clean(completion, gold)
    lines = [line for line in completion.splitlines() if line.strip()]
    return _clean(lines[-1], gold) if lines else None


def scratchpad_answer(completion: str) -> str | None:
    """The text after the last ``>`` of a completion, stripped; None when there is no ``>``."""
    if ">" not in completion:
        return None
    return completion.rsplit(">", 1)[1].strip()


def list_items(text: str) -> list[str]:
    """'[a, b]', "['a', 'b']", '(a, b)' and 'a, b' all give ['a', 'b']."""
    text = text.strip()
    if len(text) >= 2 and text[0] + text[-1] in ("[]", "()", "{}"):
        text = text[1:-1]
    items = (item.strip().strip("'\"").strip() for item in text.split(","))
    return [item for item in items if item]
