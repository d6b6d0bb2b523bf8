r"""minerva_math's answers, as lm-eval 0.4.13 extracts and compares them.

The extraction and normalisation below are lm-eval 0.4.13's
(``lm_eval/tasks/minerva_math/utils.py``, MIT licence), copied character for character:
``last_boxed_only_string``, ``remove_boxed``, ``get_unnormalized_answer``,
``SUBSTITUTIONS``, ``REMOVED_EXPRESSIONS``, ``normalize_final_answer``. A document's gold
``answer`` is ``normalize_final_answer(remove_boxed(last_boxed_only_string(solution)))``
(lm-eval's ``process_docs``).

Two metrics per document, as lm-eval's ``process_results`` gives them:

- ``exact_match``: the generation's "Final Answer: The final answer is X. I hope it is
  correct." answer, normalised, ``is_equiv`` to the gold answer: string-equal, or sympy
  parses both (``parse_latex``, ANTLR 4.11) and simplifies their difference to 0, within
  5 s. lm-eval 0.4.13 already counts a string-equal pair as equivalent before parsing
  (older versions scored ~25 of MATH's gold answers wrong because sympy cannot parse
  tuples and intervals, lm-eval #4030); ``check`` records when that rule decided
  (``identical_unparsed``), so the number of documents an older lm-eval scores
  differently is known.
- ``math_verify``: Math-Verify's ``verify(parse(solution), parse(generation))``.

What llmboard adds is how the checks run, not what they compute: in a worker process's
main thread (``isolation.run_isolated``), where the 5 s alarms of both checks work from
any calling thread, with a hard wall-clock limit on top; and a status per check, so that
a timed-out check is recorded as ``timeout`` (scored 0, as lm-eval scores it) instead
of vanishing into a silent "wrong".
"""

from __future__ import annotations

import logging
import re
import signal

from .isolation import run_isolated

INVALID_ANSWER = "[invalidanswer]"
# lm-eval's is_equiv timeout (its ``timeout(seconds=5)``)
EQUIV_TIMEOUT_S = 5


# ---------------------------------------------------------------- lm-eval 0.4.13's code
def last_boxed_only_string(string: str) -> str | None:
    idx = string.rfind("\\boxed")
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None

    i = idx
    right_brace_idx = None
    num_left_braces_open = 0
    while i < len(string):
        if string[i] == "{":
            num_left_braces_open += 1
        if string[i] == "}":
            num_left_braces_open -= 1
            if num_left_braces_open == 0:
                right_brace_idx = i
                break
        i += 1

    if right_brace_idx is None:
        retval = None
    else:
        retval = string[idx : right_brace_idx + 1]

    return retval


def remove_boxed(s: str) -> str:
    if "\\boxed " in s:
        left = "\\boxed "
        assert s[: len(left)] == left
        return s[len(left) :]

    left = "\\boxed{"

    assert s[: len(left)] == left
    assert s[-1] == "}"

    return s[len(left) : -1]


def get_unnormalized_answer(text: str) -> str:
    INVALID_ANSWER = "[invalidanswer]"
    end_seq = "I hope it is correct."
    text += end_seq
    match = re.search(
        r"Final Answer: The final answer is(.*?). I hope it is correct.",
        text,
    )
    if match:
        return match.group(1).strip()
    else:
        return INVALID_ANSWER


SUBSTITUTIONS = [
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    (r"\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
]
REMOVED_EXPRESSIONS = [
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "ft",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    r"\mathrm{th}",
    r"^\circ",
    r"^{\circ}",
    r"\;",
    r",\!",
    "{,}",
    '"',
    "\\dots",
]


def normalize_final_answer(final_answer: str) -> str:
    """Normalize a final answer to a quantitative reasoning question.

    Copied character for character from appendix D of Lewkowycz et al. (2022)
    """
    final_answer = final_answer.split("=")[-1]

    # Remove unit words while whitespace still delimits them, so that
    # "2\pi cm" loses "cm" and "\left" keeps its "ft" (word boundaries
    # cannot match inside a LaTeX command name)
    for expr in REMOVED_EXPRESSIONS:
        if expr.isalpha():
            final_answer = re.sub(rf"(?<!\\)\b{expr}\b", "", final_answer)

    for before, after in SUBSTITUTIONS:
        final_answer = final_answer.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        if expr.isalpha():
            # Units glued to their surroundings once whitespace is gone;
            # skip LaTeX command spans so "ft" cannot corrupt "\left".
            # Trade-off: a zero-separator <command><unit> run like "\picm"
            # survives as one token instead of being stripped by accident.
            segments = re.split(r"(\\[a-zA-Z]+)", final_answer)
            for i in range(0, len(segments), 2):
                segments[i] = segments[i].replace(expr, "")
            final_answer = "".join(segments)
        else:
            final_answer = final_answer.replace(expr, "")

    # Extract answer that is in LaTeX math, is bold,
    # is surrounded by a box, etc.
    final_answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", final_answer)
    final_answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", final_answer)

    # Normalize shorthand TeX:
    #  \fracab -> \frac{a}{b}
    #  \frac{abc}{bef} -> \frac{abc}{bef}
    #  \fracabc -> \frac{a}{b}c
    #  \sqrta -> \sqrt{a}
    #  \sqrtab -> sqrt{a}b
    final_answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", final_answer)
    # \sqrt[3]a -> \sqrt[3]{a}: canonicalize indexed roots with an unbraced
    # argument before the shorthand rule below, which must skip them entirely
    # or its [^ {] class would consume the "[" of the index and corrupt
    # \sqrt[3]{8} into \sqrt{[}3]{8}.
    final_answer = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", final_answer)
    final_answer = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", final_answer)
    final_answer = final_answer.replace("$", "")

    # Normalize 100,000 -> 100000: strip commas only when they are true
    # thousands-group separators. A bare tuple like "0,1" would otherwise
    # pass the old digit check and get fused into the garbage number "01"
    # (16 MATH test-set gold answers are bare tuples).
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", final_answer):
        final_answer = final_answer.replace(",", "")

    return final_answer


# ------------------------------------------------------------------- llmboard's checks
def gold_answer(solution: str) -> str:
    """lm-eval's ``process_docs``: the normalised boxed answer of a reference solution."""
    boxed = last_boxed_only_string(solution)
    if boxed is None:
        raise ValueError("the solution has no \\boxed{...} answer")
    return normalize_final_answer(remove_boxed(boxed))


def process_doc(doc: dict) -> dict:
    """A MATH document with lm-eval's ``answer`` (``process_docs``)."""
    return {**doc, "answer": gold_answer(doc["solution"])}


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout


def is_equiv(x1: str, x2: str, seconds: float = EQUIV_TIMEOUT_S) -> tuple[bool, str]:
    """lm-eval 0.4.13's ``is_equiv`` with its outcome named: (equivalent, status), status
    one of ``identical`` (string-equal, sympy parses both), ``identical_unparsed``
    (string-equal, sympy cannot parse: lm-eval 0.4.13's rule decided), ``equivalent``,
    ``different``, ``unparsed`` (a parse or subtraction failed: not equivalent),
    ``timeout`` (over ``seconds``: not equivalent, as in lm-eval), ``error``.
    Runs only in a main thread (``signal``): call it through ``check_documents``."""
    import sympy
    from sympy.parsing.latex import parse_latex

    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        if isinstance(x1, str) and x1 and x1 == x2:
            try:
                parse_latex(x1)
            except Exception:  # noqa: BLE001 - any parser failure: lm-eval's rule decides
                return True, "identical_unparsed"
            return True, "identical"
        try:
            diff = parse_latex(x1) - parse_latex(x2)
        except (sympy.parsing.latex.errors.LaTeXParsingError, sympy.SympifyError, TypeError):
            return False, "unparsed"
        try:
            return (True, "equivalent") if sympy.simplify(diff) == 0 else (False, "different")
        except ValueError:
            return False, "error"
    except _Timeout:
        return False, "timeout"
    except Exception:  # noqa: BLE001 - lm-eval's blanket except: not equivalent
        return False, "error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class _TimeoutLog(logging.Handler):
    """Math-Verify logs "Timeout during ..." and returns a silent empty/False: count it."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.timeouts = 0

    def emit(self, record):
        if "Timeout" in record.getMessage():
            self.timeouts += 1


def math_verify(solution: str, generation: str) -> tuple[bool, str]:
    """lm-eval's ``verify(gold=parse(solution), target=parse(generation))`` (Math-Verify's
    defaults: 5 s alarms) and its status: ``verified``, ``different``, ``timeout``
    (a parse or the comparison timed out and was scored not equivalent)."""
    from math_verify import parse, verify

    log = logging.getLogger("math_verify")
    handler = _TimeoutLog()
    log.addHandler(handler)
    try:
        ok = bool(verify(gold=parse(solution), target=parse(generation)))
    finally:
        log.removeHandler(handler)
    if handler.timeouts:
        return ok, "timeout"
    return ok, "verified" if ok else "different"


def check(item: tuple[str, str, str] | list[str]) -> dict:
    """One document, ``(generation, solution, gold answer)``: lm-eval's two metrics and
    what decided them."""
    generation, solution, gold = item
    answer = normalize_final_answer(get_unnormalized_answer(generation))
    em, em_status = is_equiv(answer, gold)
    mv, mv_status = math_verify(solution, generation)
    return {
        "answer": answer,
        "exact_match": float(em),
        "exact_match_check": em_status,
        "math_verify": float(mv),
        "math_verify_check": mv_status,
    }


def check_documents(items: list[tuple[str, str, str]], workers: int | None = None) -> list[dict]:
    """``check`` for each document, in worker processes (see the module docstring); a
    check killed at the hard limit scores 0 with the status ``killed``."""
    out = []
    results = run_isolated(f"{__name__}:check", items, workers=workers)
    for (generation, _, _), (status, value) in zip(items, results):
        if status == "ok":
            out.append(value)
            continue
        out.append(
            {
                "answer": normalize_final_answer(get_unnormalized_answer(generation)),
                "exact_match": 0.0,
                "exact_match_check": status,
                "math_verify": 0.0,
                "math_verify_check": status,
            }
        )
    return out
