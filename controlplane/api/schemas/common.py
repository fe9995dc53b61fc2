"""What every request body shares: unknown fields are refused (a typo is an error, not silence),
numbers are finite, and every string is one of four kinds, each refusing what it cannot be.

- ``Name``: what an operator reads in a table (a workload's, a key's name, a GPU model): no
  control, format (bidi overrides, zero-width characters), private-use, unassigned or
  line-separator character, so one name cannot pass itself off as another.
- ``Text``: free text such as a reason: any ordinary Unicode, but no control character, no line
  separator and no bidi control.
- ``Arg``: what a tenant's process receives (an argv element, an env value): anything but NUL,
  which no process can receive (``Popen`` raises) and no database can store.
- ids in paths and query strings: ``ID_PATTERN`` (``deps.PathId``, ``deps.QueryId``).

Whatever the kind, ``api.bodies`` has already refused a NUL or an unpaired surrogate anywhere
in a body; these types say what each field may hold beyond that.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

ID_PATTERN = r"^[A-Za-z0-9_-]+$"
ID_MAX_LENGTH = 40

_NAME_REFUSED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_TEXT_REFUSED = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Explicit directional formatting (Unicode UAX #9): reorders what follows it on screen.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _first_refused(value: str, categories: frozenset[str], extra: frozenset[str] = frozenset()) -> str | None:
    for ch in value:
        if ch in extra or unicodedata.category(ch) in categories:
            return ch
    return None


def check_name(value: str) -> str:
    ch = _first_refused(value, _NAME_REFUSED)
    if ch is not None:
        raise ValueError(f"a name may not hold U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})")
    return value


def check_text(value: str) -> str:
    ch = _first_refused(value, _TEXT_REFUSED, _BIDI_CONTROLS)
    if ch is not None:
        raise ValueError(f"the text may not hold U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})")
    return value


def check_arg(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("a NUL character or an unpaired surrogate cannot be passed to a process")
    return value


Name = Annotated[str, AfterValidator(check_name)]
Text = Annotated[str, AfterValidator(check_text)]
Arg = Annotated[str, AfterValidator(check_arg)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
