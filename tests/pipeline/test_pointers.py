"""``data_pointer`` keeps nothing alive, so every pointer a kernel takes must point
into memory its caller holds: an argument, or a view of one. Numba frees an array
the kernel made itself after that array's last use, and the loop would then write
into freed memory, silently. This reads every kernel that takes a pointer and
follows each pointed-at name back through its assignments to the kernel's own
arguments."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from pipeline.pointers import data_pointer

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("connectors", "models", "pipeline")


def kernels_taking_pointers() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and any(
                    _is_pointer_call(call) for call in ast.walk(node)
                ):
                    found.append((f"{package}/{path.name}::{node.name}", node))
    return found


def _is_pointer_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "data_pointer"
    )


def _root(expr: ast.expr) -> str | None:
    """The name a view is taken from: ``a[1:]``, ``a.view(t)``, ``a.T`` -> ``a``."""
    while True:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Subscript | ast.Attribute):
            expr = expr.value
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            expr = expr.func.value  # a method of the array: bits.view(...)
        else:
            return None  # np.empty(...), arithmetic: memory the kernel made


def _sources(function: ast.FunctionDef) -> dict[str, list[ast.expr]]:
    """Every expression each local name is assigned (tuple unpacking of a name gives
    each target that name); names assigned a pointer are left out."""
    sources: dict[str, list[ast.expr]] = {}
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs: list[tuple[ast.expr, ast.expr]] = [(target, node.value)]
            if isinstance(target, ast.Tuple):
                values = node.value.elts if isinstance(node.value, ast.Tuple) else None
                pairs = [
                    (t, values[i] if values else node.value) for i, t in enumerate(target.elts)
                ]
            for name, value in pairs:
                if isinstance(name, ast.Name) and not _is_pointer_call(value):
                    sources.setdefault(name.id, []).append(value)
    return sources


def held_by_caller(name: str, arguments: set[str], sources: dict[str, list[ast.expr]]) -> bool:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in arguments and current not in sources:
            continue
        if current not in sources:
            return False
        for value in sources[current]:
            root = _root(value)
            if root is None:
                return False
            todo.append(root)
    return True


def test_the_kernels_taking_pointers_are_found() -> None:
    # the check below means nothing if it reads no kernel
    names = {name for name, _ in kernels_taking_pointers()}
    assert {"models/compiled_gru.py::_layer", "models/features.py::_features_kernel",
            "connectors/csv_text.py::write_rows"} <= names  # fmt: skip


@pytest.mark.parametrize(("where", "function"), kernels_taking_pointers())
def test_every_pointer_points_into_an_argument(where: str, function: ast.FunctionDef) -> None:
    arguments = {a.arg for a in [*function.args.args, *function.args.kwonlyargs]}
    if function.args.vararg is not None:
        arguments.add(function.args.vararg.arg)
    sources = _sources(function)
    for call in ast.walk(function):
        if _is_pointer_call(call):
            pointed = _root(call.args[0])
            assert pointed is not None, f"{where}: a pointer into a temporary"
            assert held_by_caller(pointed, arguments, sources), (
                f"{where}: data_pointer({pointed}) points into memory the kernel made; "
                "pass the array in from the caller"
            )


def test_the_check_flags_a_kernel_made_array() -> None:
    # the rule's own test: a scratch array made inside the kernel is refused, the
    # same array passed in (or viewed) is accepted
    source = """
def bad(x):
    scratch = np.empty(4)
    p = data_pointer(scratch)

def good(x, scratch):
    half = scratch[:2].view(np.float32)
    p, q = data_pointer(scratch), data_pointer(half)
"""
    functions = {f.name: f for f in ast.parse(source).body if isinstance(f, ast.FunctionDef)}
    for name, expected in (("bad", False), ("good", True)):
        function = functions[name]
        arguments = {a.arg for a in function.args.args}
        sources = _sources(function)
        verdicts = [
            held_by_caller(_root(call.args[0]) or "", arguments, sources)
            for call in ast.walk(function)
            if _is_pointer_call(call)
        ]
        assert verdicts and all(v == expected for v in verdicts), name


def test_a_pointer_reads_and_writes_the_arrays_memory() -> None:
    import numba

    @numba.njit
    def double(values):
        p = data_pointer(values)
        for i in range(values.shape[0]):
            p[i] = 2 * p[i]

    values = np.arange(5.0)
    double(values)
    assert values.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
