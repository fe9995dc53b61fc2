"""The house rules the layout promises, checked on the code itself: pure cores do no I/O, routers
run no SQL and no arithmetic, services know nothing of FastAPI or Celery."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "controlplane"
PURE = ("domain", "scheduling", "power", "dispatch", "metering")
IO_MODULES = ("sqlalchemy", "redis", "fastapi", "starlette", "celery", "httpx", "psycopg", "uvicorn", "alembic")
SHELLS = (
    "controlplane.services",
    "controlplane.store",
    "controlplane.api",
    "controlplane.live",
    "controlplane.workers",
)


def _modules(folder: Path) -> Iterator[Path]:
    yield from sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _hits(imports: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports if any(i == p or i.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("core", PURE)
def test_pure_cores_import_no_io_and_no_shell(core: str) -> None:
    for path in _modules(PACKAGE / core):
        imports = _imports(path)
        assert not _hits(imports, IO_MODULES), f"{path.relative_to(ROOT)} imports {_hits(imports, IO_MODULES)}"
        assert not _hits(imports, SHELLS), f"{path.relative_to(ROOT)} imports {_hits(imports, SHELLS)}"


def test_services_know_nothing_of_fastapi_or_celery() -> None:
    for path in _modules(PACKAGE / "services"):
        bad = _hits(_imports(path), ("fastapi", "starlette", "celery", "controlplane.api", "controlplane.workers"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def _is_constant(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.BinOp):
        return _is_constant(node.left) and _is_constant(node.right)
    return isinstance(node, ast.UnaryOp) and _is_constant(node.operand)


@pytest.mark.parametrize("router", sorted(p.name for p in (PACKAGE / "api" / "routers").glob("*.py")))
def test_routers_run_no_sql_and_no_arithmetic(router: str) -> None:
    path = PACKAGE / "api" / "routers" / router
    imports = _imports(path)
    assert not _hits(imports, ("sqlalchemy", "controlplane.store")), _hits(
        imports, ("sqlalchemy", "controlplane.store")
    )
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in {"execute", "scalars", "scalar", "query", "add", "flush"}, (
                f"{router}:{node.lineno} calls .{node.func.attr}() itself: that belongs in a service"
            )
        if isinstance(node, ast.BinOp | ast.AugAssign) and not (isinstance(node, ast.BinOp) and _is_constant(node)):
            op = node.op
            if isinstance(op, ast.Add | ast.Sub | ast.Mult | ast.Div | ast.FloorDiv | ast.Mod | ast.Pow):
                raise AssertionError(f"{router}:{node.lineno} computes in the router: that belongs in a service")


def test_every_capability_has_its_home() -> None:
    for package in (
        *PURE,
        "store/models",
        "store/queries",
        "live",
        "integrations",
        "services/agents",
        "services/workloads",
        "services/fleet",
        "services/scheduler",
        "services/admin",
    ):
        assert (PACKAGE / package / "__init__.py").is_file(), package
    # The old catch-alls are gone: no module of services/ sits beside its capability packages.
    loose = sorted(p.name for p in (PACKAGE / "services").glob("*.py") if p.name != "__init__.py")
    assert loose == ["auth.py", "singleton.py", "uow.py"], loose
