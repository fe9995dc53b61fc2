"""The lock is what a fresh machine installs: it must pin every dependency pyproject.toml names,
and the environment running the tests must be the one it describes (else CI tested something else).

``make lock`` regenerates requirements.lock with pip-compile; ``make install`` installs it with
``--require-hashes`` and then the project with ``--no-deps``.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
EXTRAS = ("server", "demo", "dev")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _declared() -> list[Requirement]:
    """The base dependencies, the locked extras' and the build backend, as pyproject.toml names them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    names = list(project["dependencies"])
    for extra in EXTRAS:
        names += project["optional-dependencies"][extra]
    names += pyproject["build-system"]["requires"]
    return [Requirement(name) for name in names]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    # A requirement spans its line and the `--hash` continuation lines after it.
    for entry in re.split(r"\n(?=\S)", LOCK.read_text()):
        match = PIN.match(entry)
        if match is None:
            assert entry.startswith("#") or not entry.strip(), f"not a pin: {entry.splitlines()[0]!r}"
            continue
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} is pinned twice"
        assert "--hash=sha256:" in entry, f"{name} has no hash: --require-hashes would refuse the lock"
        pins[name] = match.group(2)
    return pins


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is in pyproject.toml but not pinned in {LOCK.name}: run `make lock`"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject.toml's {req}: run `make lock`"
        )


def test_the_running_environment_is_the_locked_one() -> None:
    mismatched = []
    for name, pinned in sorted(_pins().items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched.append(f"{name}: locked {pinned}, not installed")
            continue
        if Version(installed) != Version(pinned):
            mismatched.append(f"{name}: locked {pinned}, installed {installed}")
    assert not mismatched, "this environment is not the lock's; run `make install`:\n" + "\n".join(mismatched)
