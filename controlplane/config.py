"""Settings for every control-plane process: one object, validated at start-up.

Only this module reads the environment (prefix ``SWITCHYARD_``). The pepper that keys API-key
hashes is a secret: on the embedded SQLite default it is generated once into the data
directory (0600); with any other database it must be given, so a production deployment can
never run on a guessable default.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.domain.enums import UnreachablePolicy
from controlplane.scheduling.snapshot import PlanningRules

_RULES = PlanningRules()


class ConfigError(RuntimeError):
    """Start-up configuration is unusable; the message tells the operator what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", extra="ignore")

    data_dir: Path = Path(".switchyard")
    database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Namespaces every Redis key we own, so two deployments (or test runs) can share a server.
    redis_prefix: str = "sy"
    pepper: SecretStr | None = None
    pepper_file: Path | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # The URL agents and the CLI use to reach the API (printed by the demo, put in tokens' help).
    public_url: str = ""

    # Agent protocol timings (seconds). Kubernetes renews node leases every 10 s with a 50 s grace.
    report_interval_s: float = Field(default=3.0, gt=0)
    lease_ttl_s: float = Field(default=15.0, gt=0)
    watch_timeout_s: float = Field(default=25.0, gt=0)
    # How long a node may stay unreachable before its workloads are handled by policy.
    unreachable_grace_s: float = Field(default=60.0, ge=0)
    # requeue: back to pending elsewhere; fail: mark failed.
    unreachable_policy: UnreachablePolicy = UnreachablePolicy.REQUEUE

    # A stopped tenant workload's grace (preemption, cancel, deadline): SIGTERM, then this long
    # before SIGKILL (``scheduling.preemption.policy.stop_grace_s``; mining stops at once).
    stop_grace_s: float = Field(default=30.0, ge=0, le=3600)
    scheduler_interval_s: float = Field(default=2.0, gt=0)
    scheduler_lease_s: float = Field(default=10.0, gt=0)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    # Planned starts and preemption churn (``scheduling.snapshot.PlanningRules``): blocked requests
    # given a planned start per pass, the least run before a workload may be a victim again, and
    # the most preemption notices one workload gets per hour.
    plan_max_plans: int = Field(default=_RULES.max_plans, ge=0, le=10_000)
    min_run_s: float = Field(default=_RULES.min_run_s, ge=0, le=7 * 24 * 3600, allow_inf_nan=False)
    notices_per_hour: int = Field(default=_RULES.notices_per_hour, ge=0, le=1000)
    max_preemptions: int = Field(default=_RULES.max_preemptions, ge=0, le=1000)
    # Planned gangs larger than this plan ahead of their class's smaller plans (0: off).
    large_gang_gpus: int = Field(default=_RULES.large_gang_gpus, ge=0, le=1_000_000)

    # How long an authenticated API key is trusted without a database lookup (0: never cached).
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    bootstrap_token_ttl_s: float = Field(default=24 * 3600, gt=0)
    default_max_duration_s: int = Field(default=7 * 24 * 3600, gt=0)
    log_level: str = "INFO"
    # Folder holding an operator's own sites.json (default: the scenarios shipped in the package).
    scenarios_dir: Path | None = None

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'switchyard.db').resolve()}"
        if not self.public_url:
            self.public_url = f"http://{self.api_host}:{self.api_port}"
        return self

    @property
    def planning_rules(self) -> PlanningRules:
        return PlanningRules(
            max_plans=self.plan_max_plans,
            min_run_s=self.min_run_s,
            notices_per_hour=self.notices_per_hour,
            max_preemptions=self.max_preemptions,
            large_gang_gpus=self.large_gang_gpus,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def pepper_bytes(self) -> bytes:
        """The HMAC pepper; generated on first use only for the embedded SQLite default."""
        if self.pepper is not None:
            value = self.pepper.get_secret_value()
            if len(value) < 16:
                raise ConfigError("SWITCHYARD_PEPPER must be at least 16 characters")
            return value.encode()
        path = self.pepper_file
        if path is None:
            if not self.is_sqlite:
                raise ConfigError(
                    "SWITCHYARD_PEPPER (or SWITCHYARD_PEPPER_FILE) must be set when the database "
                    "is not the embedded SQLite default"
                )
            path = self.data_dir / "pepper"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_urlsafe(32))
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the pepper file {path}: {exc}") from exc
        if len(value) < 16:
            raise ConfigError(f"the pepper in {path} is shorter than 16 characters")
        return value.encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
