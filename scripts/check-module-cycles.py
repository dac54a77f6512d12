#!/usr/bin/env python3
"""Finds import cycles between the modules of each workspace crate.

Every `.rs` file under a crate's `src/` is a module (`src/a/b.rs` and `src/a/b/mod.rs`
are `a::b`). Each `crate::x::y` or `super::…` path in a file (outside comments) is an
edge to the deepest module it names. An edge between two modules is lifted to the
children of their closest common ancestor, so `a::b → c::d` counts as `a → c`; edges
between a module and its own ancestors or descendants (a parent re-exporting its child,
a child using its parent's items, `mod tests` using `super::*`) are not cycles. Any
cycle left is printed with the files and lines that make it, and the exit status is 1.

Usage: scripts/check-module-cycles.py [CRATE_DIR ...]   (default: every crate with src/)
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

PATH = re.compile(r"\b((?:crate|super)(?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))+)")
GROUP = re.compile(r"\b((?:crate|super)(?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))*)::\{([^}]*)\}")


def modules(src: Path) -> dict:
    """Module path (tuple) -> file, for every .rs file under src/."""
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
            parts = parts[:-1]
        if parts and parts[0] == "bin":
            continue
        mods[tuple(parts)] = f
    return mods


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def resolve(path: str, here: tuple, is_dir_module: bool) -> list:
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = [], parts[1:]
    else:
        # `super` of a file module is its parent; of a mod.rs it is its parent too.
        base = list(here)
        rest = parts
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
    return base + rest


def deepest(target: list, mods: dict) -> tuple:
    for n in range(len(target), -1, -1):
        if tuple(target[:n]) in mods:
            return tuple(target[:n])
    return ()


def lift(a: tuple, b: tuple):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n == len(a) or n == len(b):
        return None  # ancestor/descendant
    return a[: n + 1], b[: n + 1]


def cycles_in(src: Path) -> list:
    mods = modules(src)
    edges = defaultdict(list)  # lifted (a, b) -> [(file, line, text)]
    for here, f in mods.items():
        is_dir = f.name == "mod.rs"
        for lineno, line in enumerate(strip_comments(f.read_text()).splitlines(), 1):
            paths = [m.group(1) for m in PATH.finditer(line)]
            for m in GROUP.finditer(line):
                for item in m.group(2).split(","):
                    item = item.strip().split(" as ")[0].strip()
                    if item and item != "self":
                        paths.append(m.group(1) + "::" + item.split("::")[0])
            for p in paths:
                target = deepest(resolve(p, here, is_dir), mods)
                pair = lift(here, target)
                if pair:
                    edges[pair].append((f, lineno, line.strip()))
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    found, seen = [], set()

    def dfs(node, stack, on_stack):
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                cycle = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append((cycle, edges))
            elif nxt not in visited:
                visited.add(nxt)
                dfs(nxt, stack + [nxt], on_stack | {nxt})

    visited = set()
    for start in sorted(graph):
        if start not in visited:
            visited.add(start)
            dfs(start, [start], {start})
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    crates = [Path(a).resolve() for a in sys.argv[1:]] or sorted(
        p.parent for p in root.glob("*/Cargo.toml") if (p.parent / "src").is_dir()
    )
    bad = 0
    for crate in crates:
        for cycle, edges in cycles_in(crate / "src"):
            bad += 1
            names = " → ".join("::".join(m) or "crate" for m in cycle)
            print(f"{crate.name}: import cycle {names}")
            for a, b in zip(cycle, cycle[1:]):
                for f, lineno, text in sorted(set(edges[(a, b)]))[:3]:
                    print(f"    {f.relative_to(root)}:{lineno}: {text}")
    if bad:
        return 1
    print(f"no import cycles between modules in {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
