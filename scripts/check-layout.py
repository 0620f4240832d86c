#!/usr/bin/env python3
"""Checks the shape of src/ (shared/style.md "Layout"):
  1. no cycle among the top-level modules, counting `crate::x` references
     in non-test code (test files and trailing `#[cfg(test)] mod tests`
     blocks are left out: a test may reach across layers);
  2. no non-test source file over MAX_LINES lines.
Prints the import graph; exits 1 on a violation. Usage: check-layout.py [--quiet]
"""

import re
import sys
from pathlib import Path

MAX_LINES = 800
SRC = Path(__file__).resolve().parent.parent / "src"
# The binary and the crate root wire everything together.
ROOTS = {"main", "lib"}
TEST_FILE = re.compile(r"(^|_)tests?\.rs$|^testdata\.rs$")
CRATE_REF = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")
TEST_BLOCK = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod tests\s*\{", re.M)


def is_test(path: Path) -> bool:
    return bool(TEST_FILE.search(path.name)) or any(p == "tests" for p in path.parts[:-1])


def non_test_text(path: Path) -> str:
    text = path.read_text()
    m = TEST_BLOCK.search(text)
    return text[: m.start()] if m else text


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def references(text: str) -> set[str]:
    out = set()
    for group, single in CRATE_REF.findall(text):
        if single:
            out.add(single)
        for item in group.split(","):
            name = item.strip().split("::")[0]
            if name:
                out.add(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    quiet = "--quiet" in sys.argv
    graph: dict[str, set[str]] = {}
    problems = []
    for path in sorted(SRC.rglob("*.rs")):
        module = module_of(path)
        if is_test(path):
            continue
        text = non_test_text(path)
        lines = text.count("\n")
        if lines > MAX_LINES:
            problems.append(f"{path.relative_to(SRC.parent)}: {lines} lines (at most {MAX_LINES})")
        if module in ROOTS:
            continue
        deps = graph.setdefault(module, set())
        deps.update(d for d in references(text) if d != module and d not in ROOTS)
    for comp in cycles(graph):
        problems.append("import cycle among: " + ", ".join(comp))
    if not quiet:
        for module in sorted(graph):
            print(f"{module:>13} -> {' '.join(sorted(graph[module])) or '(nothing)'}")
    for p in problems:
        print(f"check-layout: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
