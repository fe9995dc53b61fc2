"""The real protocol-1 code (agent and control plane as of git commit de23016), for the
compatibility tests: read from this checkout's git history, never re-typed.

Without that history (a shallow clone, an exported tarball) the tests fail and say how to get
it: a compatibility test that skips would let a rolling upgrade break unnoticed.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

V1_COMMIT = "de23016"  # the last commit whose agent and control plane speak only protocol 1
REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        pytest.fail(f"the protocol-1 code is read from git commit {V1_COMMIT}, but git is not installed")
    if done.returncode != 0:
        pytest.fail(
            f"the protocol-1 code is read from git commit {V1_COMMIT} of {REPO}, which is not available "
            f"(a shallow clone or no .git? run `git fetch --unshallow`): {done.stderr.decode(errors='replace')}"
        )
    return done.stdout


@cache
def v1_protocol() -> ModuleType:
    """``agents/protocol.py`` of protocol 1, imported under its own name beside today's module."""
    source = _git("show", f"{V1_COMMIT}:agents/protocol.py")
    name = "switchyard_protocol_v1"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "protocol_v1.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic resolves the postponed annotations through it
        spec.loader.exec_module(module)
    assert module.PROTOCOL_VERSION == 1, module.PROTOCOL_VERSION
    return module


def v1_model(name: str) -> type[BaseModel]:
    """One wire model of protocol 1 (they refuse unknown fields, as a real version-1 agent does)."""
    model = getattr(v1_protocol(), name)
    assert isinstance(model, type) and issubclass(model, BaseModel), name
    return model


def v1_tree(dest: Path) -> Path:
    """The whole protocol-1 source tree in ``dest``: run it with ``cwd`` and ``PYTHONPATH`` there."""
    archive = _git("archive", "--format=tar", V1_COMMIT)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest
