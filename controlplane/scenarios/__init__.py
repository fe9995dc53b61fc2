"""Where the shared scenario files are: ../shared/scenarios beside the repository when present
(the source of truth), else the copy of sites.json packaged here, so a lone clone still demos."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent.parent


def scenarios_dir(override: Path | None = None) -> Path:
    if override is not None:
        return override
    for candidate in (_REPO.parent / "shared" / "scenarios", _REPO / "shared" / "scenarios"):
        if (candidate / "sites.json").exists():
            return candidate
    return _HERE


def sites_file(override: Path | None = None) -> Path:
    return scenarios_dir(override) / "sites.json"
