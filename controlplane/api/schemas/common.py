"""What every request body shares: unknown fields are refused (a typo is an error, not silence)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
