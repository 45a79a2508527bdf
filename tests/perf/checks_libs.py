"""Choose the CEL and JSONPath libraries of the `http` kind by measurement, not by name.

    python -m tests.perf.checks_libs [--wheels] [--rounds N]

Every candidate that is installed is measured on this project's own expressions and paths
(those of deploy/examples/ and the "Writing checks" page): compile time, evaluation time
on a realistic answer, the error message of a broken expression (does it give the
position?), a few conformance cases (CEL's numeric comparison across int and double, RFC
9535 filters, negative indexes, quoted names) and what a hostile answer (deep JSON, a huge
array) costs. The project's venv holds only the winners; install the others into a scratch
venv to compare (`pip install cel-python common-expression-language cel-expr-python
python-jsonpath jsonpath-rfc9535 jsonpath-ng`). `--wheels` asks PyPI (pip download) which
candidates have binary wheels for the image (CPython 3.11, manylinux x86_64 and aarch64).
Figures go to docs (`## -> performance`), never into a timed test.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

EXPRESSIONS = {
    "has_items": "size(body.items) > 0",
    "same_item": "body.id == vars.item && duration_ms < 500",
    "json_answer": 'status == 200 && headers["content-type"].startsWith("application/json")',
    "prediction_shape": "size(body.predictions) == 2 && body.predictions.all(p, p >= 0.0)",
}
BROKEN = "size(body.items > "
PATHS = {"first_id": "$.items[0].id", "all_ids": "$.items[*].id", "last": "$.items[-1].name", "deep": "$..id"}
BROKEN_PATH = "$.items[0"
BODY = {"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(50)], "id": 7}
CONTEXT: dict[str, Any] = {
    "status": 200,
    "headers": {"content-type": "application/json"},
    "body": {**BODY, "predictions": [0.25, 0.75]},
    "text": "",
    "duration_ms": 12.5,
    "vars": {"item": 7},
}
# RFC 9535 cases: (path, document, expected values in order).
RFC9535 = [
    ("$.items[?@.id > 47].id", BODY, [48, 49]),
    ("$.items[-1].id", BODY, [49]),
    ("$['a b']", {"a b": 1}, [1]),
    ("$.items[0:2].id", BODY, [0, 1]),
    ("$[?length(@) > 1]", {"x": [1, 2], "y": [1]}, [[1, 2]]),
]


def timed(fn: Callable[[], Any], rounds: int) -> float:
    """Microseconds per call (best of three batches)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - start) / rounds)
    return best * 1e6


def one_line(text: str) -> str:
    return " ".join(str(text).split())[:110]


# ---------------------------------------------------------------------------------- CEL


def cel_rust() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    import cel

    return cel.compile, lambda program, ctx: program.execute(ctx)


def cel_python() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    import celpy

    env = celpy.Environment()

    def compile_(source: str) -> Any:
        return env.program(env.compile(source))

    return compile_, lambda program, ctx: program.evaluate({k: celpy.json_to_cel(v) for k, v in ctx.items()})


def cel_google() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    from cel_expr_python import cel

    # As monitor/probes/http/expressions.py declares them: all dynamic (typed `double`,
    # `duration_ms < 500` is refused by its checker: no overload of double < int).
    env = cel.NewEnv(variables={name: cel.Type.DYN for name in CONTEXT})
    return env.compile, lambda program, ctx: program.eval(data=ctx).plain_value()


CEL = {
    "common-expression-language": ("cel", cel_rust),
    "cel-python": ("celpy", cel_python),
    "cel-expr-python": ("cel_expr_python", cel_google),
}


def bench_cel(rounds: int) -> None:
    print("\n## CEL (microseconds per call; `-`: refused)\n")
    names = list(EXPRESSIONS)
    print(
        "| library | "
        + " | ".join(f"compile {n}" for n in names)
        + " | "
        + " | ".join(f"eval {n}" for n in names)
        + " |"
    )
    print("|---" * (1 + 2 * len(names)) + "|")
    errors: list[str] = []
    for library, (module, load) in CEL.items():
        if importlib.util.find_spec(module) is None:
            print(f"| {library} | not installed |")
            continue
        compile_, evaluate = load()
        compiles, evals = [], []
        for source in EXPRESSIONS.values():
            try:
                program = compile_(source)
                compiles.append(f"{timed(lambda s=source, c=compile_: c(s), max(rounds // 10, 10)):.1f}")
                value = evaluate(program, CONTEXT)
                cost = timed(lambda p=program, e=evaluate: e(p, CONTEXT), rounds)
                evals.append(f"{cost:.1f}" + ("" if value else " (false!)"))
            except Exception as exc:  # noqa: BLE001 - a refusal is a finding
                compiles.append("-")
                evals.append("-")
                errors.append(f"{library}: {source!r} refused: {one_line(str(exc))}")
        print(f"| {library} | " + " | ".join(compiles) + " | " + " | ".join(evals) + " |")
        try:
            compile_(BROKEN)
            errors.append(f"{library}: broken {BROKEN!r} accepted!")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{library}: broken {BROKEN!r}: {type(exc).__name__}: {one_line(str(exc))}")
        deep: Any = 0
        for _ in range(5000):
            deep = [deep]
        try:
            program = compile_("size(body) > 0")
            start = time.perf_counter()
            evaluate(program, {**CONTEXT, "body": list(range(200_000))})
            errors.append(f"{library}: size() of a 200k array: {(time.perf_counter() - start) * 1e3:.1f} ms")
            start = time.perf_counter()
            evaluate(program, {**CONTEXT, "body": deep})
            errors.append(f"{library}: 5000-deep list: {(time.perf_counter() - start) * 1e3:.1f} ms")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{library}: hostile input: {type(exc).__name__}: {one_line(str(exc))}")
    print()
    for line in errors:
        print(f"- {line}")


# ---------------------------------------------------------------------------------- JSONPath


def jp_python_jsonpath() -> tuple[Callable[[str], Any], Callable[[Any, Any], list[Any]]]:
    import jsonpath

    return jsonpath.compile, lambda path, doc: path.findall(doc)


def jp_rfc9535() -> tuple[Callable[[str], Any], Callable[[Any, Any], list[Any]]]:
    import jsonpath_rfc9535

    return jsonpath_rfc9535.compile, lambda path, doc: path.find(doc).values()


def jp_ng() -> tuple[Callable[[str], Any], Callable[[Any, Any], list[Any]]]:
    from jsonpath_ng.ext import parse

    return parse, lambda path, doc: [m.value for m in path.find(doc)]


JSONPATH = {
    "python-jsonpath": ("jsonpath", jp_python_jsonpath),
    "jsonpath-rfc9535": ("jsonpath_rfc9535", jp_rfc9535),
    "jsonpath-ng (ext)": ("jsonpath_ng", jp_ng),
}


def bench_jsonpath(rounds: int) -> None:
    print("\n## JSONPath (microseconds per call)\n")
    names = list(PATHS)
    header = " | ".join(f"compile {n}" for n in names) + " | " + " | ".join(f"find {n}" for n in names)
    print(f"| library | {header} | RFC 9535 cases passed |")
    print("|---" * (2 + 2 * len(names)) + "|")
    notes: list[str] = []
    for library, (module, load) in JSONPATH.items():
        if importlib.util.find_spec(module) is None:
            print(f"| {library} | not installed |")
            continue
        compile_, find = load()
        compiles, finds = [], []
        for source in PATHS.values():
            try:
                path = compile_(source)
                compiles.append(f"{timed(lambda s=source, c=compile_: c(s), max(rounds // 10, 10)):.1f}")
                finds.append(f"{timed(lambda p=path, f=find: f(p, BODY), max(rounds // 10, 10)):.1f}")
            except Exception as exc:  # noqa: BLE001
                compiles.append("-")
                finds.append("-")
                notes.append(f"{library}: {source!r} refused: {one_line(str(exc))}")
        passed = 0
        for source, doc, expected in RFC9535:
            try:
                got = find(compile_(source), doc)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"{library}: RFC case {source!r} refused: {one_line(str(exc))}")
                continue
            if list(got) == expected:
                passed += 1
            else:
                notes.append(f"{library}: RFC case {source!r} gave {got!r}, expected {expected!r}")
        print(f"| {library} | " + " | ".join(compiles) + " | " + " | ".join(finds) + f" | {passed}/{len(RFC9535)} |")
        try:
            compile_(BROKEN_PATH)
            notes.append(f"{library}: broken {BROKEN_PATH!r} accepted!")
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{library}: broken {BROKEN_PATH!r}: {type(exc).__name__}: {one_line(str(exc))}")
    print()
    for line in notes:
        print(f"- {line}")


CANDIDATES = [*CEL, "python-jsonpath", "jsonpath-rfc9535", "jsonpath-ng"]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64")


def wheels() -> None:
    """Which candidates pip can install from binaries into the image (CPython 3.11, glibc)."""
    print("\n## Wheels for the image (CPython 3.11)\n")
    print("| package | " + " | ".join(PLATFORMS) + " |")
    print("|---" * (1 + len(PLATFORMS)) + "|")
    for package in CANDIDATES:
        cells = []
        for platform in PLATFORMS:
            with tempfile.TemporaryDirectory() as scratch:
                done = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
                    + ["--platform", platform, "--python-version", "3.11", "--implementation", "cp"]
                    + ["--abi", "cp311", "-d", scratch, package],
                    capture_output=True,
                    text=True,
                )
                import os

                files = os.listdir(scratch)
            cells.append(files[0] if done.returncode == 0 and files else "none")
        print(f"| {package} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--wheels", action="store_true", help="also ask PyPI for the image's wheels")
    parser.add_argument("--smoke", action="store_true", help="20 rounds: does it still run? (figures meaningless)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.wheels = 20, False
    print(f"python {sys.version.split()[0]}, {args.rounds} rounds")
    bench_cel(args.rounds)
    bench_jsonpath(args.rounds)
    if args.wheels:
        wheels()


if __name__ == "__main__":
    main()
