# Copyright: (c) Virtuoso deploy maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Static audit of divisions in Python source: guarded (safe_operations) versus raw.

Used by the ``division_guard_audit`` module. Standard library only: this file is
shipped to the managed hosts inside the module payload, and also runs on the
controller.

A *guarded* division is a call of one of the guard functions (``safe_divide(a, b)``
or ``so.safe_divide(a, b)``). A *raw* division is ``/``, ``//``, ``%``, ``/=``,
``//=``, ``%=`` or a numpy division function (``np.divide`` and friends, through any
alias numpy was imported as), unless

* it is inside the arguments of a guard call,
* its divisor is a non-zero numeric constant (``x / 2``, ``x / -1.5``, ``x / 1e3``,
  ``x / (24 * 60)``; ``x / 0`` and ``x / 0.0`` are still reported), or
* it is ``%`` with a string or bytes literal on the left (``"%s" % value``).
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_GUARD_FUNCTIONS = (
    "safe_divide",
    "safe_ratio",
    "safe_percentage",
    "safe_pct_change",
    "clamp_score",
    "safe_log",
    "safe_sqrt",
    "safe_mean",
    "safe_std",
)
NUMPY_MODULES = frozenset({"numpy"})
NUMPY_DIVISION_FUNCTIONS = frozenset({"divide", "true_divide", "floor_divide", "mod", "remainder"})
BINARY_OPS: dict[type[ast.operator], str] = {ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}
MAX_SOURCE_CHARS = 200
MAX_CONSTANT_EXPONENT = 64


class AuditError(Exception):
    """A file could not be audited (unreadable, undecodable or not valid Python)."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path} line {line}" if line else path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Finding:
    """One raw division: 1-based line and column of the operator, the operator, the source line."""

    line: int
    col: int
    op: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        """Return the finding as the module returns it."""
        return {"line": self.line, "col": self.col, "op": self.op, "source": self.source}


@dataclass
class FileReport:
    """Audit result of one file."""

    path: str
    relpath: str
    guarded: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def unguarded(self) -> int:
        """Number of raw divisions in the file."""
        return len(self.findings)


def constant_value(node: ast.expr) -> int | float | complex | None:
    """Evaluate ``node`` if it is built only from numeric literals, else return None.

    Handles literals (``2``, ``1e3``), unary ``+``/``-`` and the arithmetic operators,
    so ``-1``, ``(24 * 60)`` and ``2 ** 10`` are constants. Booleans are not numbers here.
    """
    if isinstance(node, ast.Constant):
        value = node.value
        return value if isinstance(value, int | float | complex) and not isinstance(value, bool) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        operand = constant_value(node.operand)
        if operand is None:
            return None
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _constant_binop(node)
    return None


def _constant_binop(node: ast.BinOp) -> int | float | complex | None:
    """Evaluate a binary operation of two numeric constants, or return None."""
    left, right = constant_value(node.left), constant_value(node.right)
    if left is None or right is None:
        return None
    operations = {
        ast.Add: lambda: left + right,
        ast.Sub: lambda: left - right,
        ast.Mult: lambda: left * right,
        ast.Div: lambda: left / right,
        ast.FloorDiv: lambda: left // right,
        ast.Mod: lambda: left % right,
        ast.Pow: lambda: left**right,
    }
    operation = operations.get(type(node.op))
    if operation is None:
        return None
    if isinstance(node.op, ast.Pow) and abs(right) > MAX_CONSTANT_EXPONENT:
        return None
    try:
        return operation()
    except (ArithmeticError, TypeError, ValueError):
        return None


def is_nonzero_constant(node: ast.expr) -> bool:
    """Return True when ``node`` is a numeric constant expression that is not zero."""
    value = constant_value(node)
    return value is not None and value != 0


def _call_name(func: ast.expr) -> str | None:
    """Return ``name`` for ``name(...)`` and the attribute for ``obj.name(...)``."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _dotted(node: ast.expr) -> str | None:
    """Return ``a.b.c`` for a chain of attribute accesses on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


@dataclass(frozen=True)
class NumpyNames:
    """How numpy's division functions are reachable in one file."""

    modules: frozenset[str]
    functions: frozenset[str]

    @classmethod
    def from_tree(cls, tree: ast.Module) -> NumpyNames:
        """Collect ``np``/``numpy`` plus every ``import numpy as x`` and ``from numpy import divide``."""
        modules = {"np", "numpy"}
        functions: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.asname or alias.name for alias in node.names if alias.name == "numpy")
            elif isinstance(node, ast.ImportFrom) and node.module in NUMPY_MODULES and node.level == 0:
                imported = (alias for alias in node.names if alias.name in NUMPY_DIVISION_FUNCTIONS)
                functions.update(alias.asname or alias.name for alias in imported)
        return cls(frozenset(modules), frozenset(functions))

    def division_call(self, call: ast.Call) -> str | None:
        """Return the callee as written (``np.divide``) if ``call`` is a numpy division, else None."""
        func = call.func
        if isinstance(func, ast.Name) and func.id in self.functions:
            return func.id
        if isinstance(func, ast.Attribute) and func.attr in NUMPY_DIVISION_FUNCTIONS:
            base = _dotted(func.value)
            if base in self.modules:
                return f"{base}.{func.attr}"
        return None


class _Scanner:
    """Walks one parsed file and collects guard calls and raw divisions."""

    def __init__(self, lines: list[str], guards: frozenset[str], numpy: NumpyNames) -> None:
        self.lines = lines
        self.guards = guards
        self.numpy = numpy
        self.guarded = 0
        self.findings: list[Finding] = []

    def scan(self, tree: ast.AST) -> None:
        """Visit every node once, knowing whether it sits inside a guard call."""
        stack: list[tuple[ast.AST, bool]] = [(tree, False)]
        while stack:
            node, in_guard = stack.pop()
            in_guard = self._check(node, in_guard)
            stack.extend((child, in_guard) for child in ast.iter_child_nodes(node))

    def _check(self, node: ast.AST, in_guard: bool) -> bool:
        """Record ``node`` if it is a guard call or a raw division; return the children's in_guard."""
        if isinstance(node, ast.Call) and _call_name(node.func) in self.guards:
            self.guarded += 1
            return True
        if in_guard:
            return True
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY_OPS:
            if not self._exempt(node.op, node.left, node.right):
                self._record(node.left, BINARY_OPS[type(node.op)])
        elif isinstance(node, ast.AugAssign) and type(node.op) in BINARY_OPS:
            if not self._exempt(node.op, None, node.value):
                self._record(node.target, BINARY_OPS[type(node.op)] + "=")
        elif isinstance(node, ast.Call):
            callee = self.numpy.division_call(node)
            if callee and not (len(node.args) >= 2 and is_nonzero_constant(node.args[1])):
                self.findings.append(self._finding(node.func.lineno, node.func.col_offset, callee))
        return False

    @staticmethod
    def _exempt(op: ast.operator, left: ast.expr | None, right: ast.expr) -> bool:
        """Divisions by a non-zero constant and string formatting with ``%`` are not raw divisions."""
        if isinstance(op, ast.Mod) and isinstance(left, ast.Constant) and isinstance(left.value, str | bytes):
            return True
        return is_nonzero_constant(right)

    def _record(self, before: ast.expr, op: str) -> None:
        """Record a raw division whose operator follows the expression ``before``."""
        line, col = self._operator_position(before)
        self.findings.append(self._finding(line, col, op, byte_col=False))

    def _operator_position(self, before: ast.expr) -> tuple[int, int]:
        """Find the 0-based (line, char column) of the operator that follows ``before``.

        Between the end of the left operand and the operator there can only be
        closing parentheses, whitespace, line continuations and comments.
        """
        line = before.end_lineno or before.lineno
        col = self._char_col(line, before.end_col_offset or 0)
        while line <= len(self.lines):
            text = self.lines[line - 1]
            while col < len(text) and text[col] in " \t\f)\\":
                col += 1
            if col < len(text) and text[col] != "#":
                return line, col
            line, col = line + 1, 0
        return before.lineno, self._char_col(before.lineno, before.col_offset)  # pragma: no cover

    def _char_col(self, line: int, byte_col: int) -> int:
        """Convert the UTF-8 byte offset ``byte_col`` on ``line`` to a character offset."""
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return len(text.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))

    def _finding(self, line: int, col: int, op: str, byte_col: bool = True) -> Finding:
        """Build a finding with a 1-based column and the stripped source line."""
        if byte_col:
            col = self._char_col(line, col)
        source = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        return Finding(line=line, col=col + 1, op=op, source=source[:MAX_SOURCE_CHARS])


def read_source(path: str) -> str:
    """Read a Python file honouring its encoding declaration; raise AuditError if impossible."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        return importlib.util.decode_source(data)
    except OSError as exc:
        raise AuditError(path, None, f"cannot read the file: {exc.strerror or exc}") from exc
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise AuditError(path, None, f"cannot decode the file: {exc}") from exc


def audit_source(source: str, path: str, relpath: str, guards: Iterable[str]) -> FileReport:
    """Audit Python ``source`` (the text of ``path``); raise AuditError on a syntax error."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise AuditError(path, exc.lineno, f"SyntaxError: {exc.msg}") from exc
    except ValueError as exc:  # e.g. null bytes in the source
        raise AuditError(path, None, f"not valid Python source: {exc}") from exc
    scanner = _Scanner(source.split("\n"), frozenset(guards), NumpyNames.from_tree(tree))
    scanner.scan(tree)
    findings = sorted(scanner.findings, key=lambda finding: (finding.line, finding.col))
    return FileReport(path=path, relpath=relpath, guarded=scanner.guarded, findings=findings)


def audit_file(path: str, relpath: str, guards: Iterable[str]) -> FileReport:
    """Read and audit one file."""
    return audit_source(read_source(path), path, relpath, guards)


def _is_walked_dir(name: str) -> bool:
    """Directories skipped when walking: caches and hidden ones (``.venv``, ``.git``)."""
    return name != "__pycache__" and not name.startswith(".")


def iter_python_files(path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(file path, path relative to path)`` for ``path`` itself or every ``.py`` below it.

    For a file the relative path is its basename. Relative paths use ``/``.
    Output is sorted so reports are stable.
    """
    if not os.path.isdir(path):
        yield path, os.path.basename(path)
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(name for name in dirnames if _is_walked_dir(name))
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                full = os.path.join(dirpath, filename)
                yield full, os.path.relpath(full, path).replace(os.sep, "/")
