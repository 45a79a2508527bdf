"""No test sleeps for a fixed time and then asserts an exact count.

"Sleep N s, then expect exactly k runs (or none)" assumes the machine kept pace with
the wall clock; on a loaded CI machine it does not, and the test flakes. Wait on an
event instead (tests.helpers.wait_for: the daemon's metrics, /status, a receiver's log)
and count only over a window the test controls (between two scrapes).

The check reads every test module's syntax tree: a `time.sleep(...)` or
`await asyncio.sleep(...)` statement followed, in the same block, by an `assert` with an
exact comparison (`==` to a number or a `len(...)`/`.count(...)`) or an `assert not ...`
before any other wait.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LOOKAHEAD = 4  # statements after the sleep that still count as "right after it"


def _is_sleep(node: ast.stmt) -> bool:
    """A wall-clock wait (`asyncio.sleep(0)`, a yield to the loop, is none)."""
    value = node.value if isinstance(node, ast.Expr) else None
    if isinstance(value, ast.Await):
        value = value.value
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    if not (isinstance(func, ast.Attribute) and func.attr == "sleep"):
        return False
    return not (value.args and isinstance(value.args[0], ast.Constant) and value.args[0].value == 0)


COUNTED = re.compile(r"count|runs|total|calls|requests|sent|dropped|notifications|pages|events", re.I)


def _is_counting(expr: ast.expr) -> bool:
    """`len(...)`, `.count(...)`, or something named like a count (runs, requests, ...)."""
    if isinstance(expr, ast.Call):
        func = expr.func
        if (isinstance(func, ast.Name) and func.id == "len") or (
            isinstance(func, ast.Attribute) and func.attr == "count"
        ):
            return True
    return not isinstance(expr, ast.Constant) and bool(COUNTED.search(ast.unparse(expr)))


def _is_number(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Constant) and isinstance(expr.value, int) and not isinstance(expr.value, bool)


def _exact_count(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Assert):
        return False
    test = node.test
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return True  # "none happened": an exact count of zero
    for compare in ast.walk(test):
        if isinstance(compare, ast.Compare) and any(isinstance(op, ast.Eq) for op in compare.ops):
            sides = [compare.left, *compare.comparators]
            if any(_is_counting(side) for side in sides) and any(
                _is_number(side) or _is_counting(side) for side in sides
            ):
                return True
    return False


def offenders(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for index, statement in enumerate(block):
                if not (isinstance(statement, ast.stmt) and _is_sleep(statement)):
                    continue
                for following in block[index + 1 : index + 1 + LOOKAHEAD]:
                    if _is_sleep(following):
                        break
                    if _exact_count(following):
                        found.append(f"{path.name}:{statement.lineno} sleeps, then line {following.lineno} counts")
                        break
    return found


def test_the_checker_finds_the_pattern(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import time\n"
        "def test_a():\n"
        "    time.sleep(3)\n"
        "    assert len(pages) == 1\n"
        "def test_ok():\n"
        "    time.sleep(1)\n"
        "    assert response.status_code == 200\n"
        "async def test_b():\n"
        "    await asyncio.sleep(1)\n"
        "    assert not sent\n"
        "def test_c():\n"
        "    wait_for(lambda: len(pages) >= 1)\n"
        "    assert len(pages) == 1\n"
    )
    assert offenders(sample) == [
        "test_sample.py:3 sleeps, then line 4 counts",
        "test_sample.py:9 sleeps, then line 10 counts",
    ]


def test_no_test_sleeps_then_counts() -> None:
    found = [line for path in sorted(TESTS.rglob("test_*.py")) for line in offenders(path)]
    assert found == [], "wait on an event instead (tests.helpers.wait_for):\n" + "\n".join(found)
