"""`switchyard`: one command for every process and the operator's admin tasks.

Imports are lazy so `switchyard agent` works on a GPU host that has only the agent's
dependencies (no FastAPI, SQLAlchemy or Celery).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _settings() -> Any:
    from controlplane.config import get_settings

    return get_settings()


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def _handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def cmd_api(args: argparse.Namespace) -> int:
    from controlplane.api.app import create_app
    from controlplane.api.server import serve

    settings = _settings()
    _logging(settings.log_level)
    return serve(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=args.access_log,
        timeout_graceful_shutdown=3,
    )


def cmd_scheduler(args: argparse.Namespace) -> int:
    from controlplane.processes import scheduler

    settings = _settings()
    _logging(settings.log_level)
    return scheduler.main(settings, _stop_event())


def cmd_worker(args: argparse.Namespace) -> int:
    from controlplane.workers.app import create_celery

    settings = _settings()
    app = create_celery(settings)
    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        f"--concurrency={args.concurrency}",
        "--pool=threads",
    ]
    argv += ["--without-gossip", "--without-mingle", "--hostname", f"switchyard@{args.name}"]
    if args.beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    app.worker_main(argv)
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from controlplane.workers.app import create_celery

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_celery(settings)
    app.start(
        [
            "beat",
            f"--loglevel={settings.log_level}",
            "--schedule",
            str(settings.data_dir / "celerybeat-schedule"),
        ]
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from controlplane.processes.demo import main as demo_main

    return demo_main(args)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from controlplane.store.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def _with_uow(fn: Callable[[Any, Any], int]) -> int:
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import check_current

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        check_current(engine)
        with transaction(make_session_factory(engine)) as session:
            return fn(session, settings)
    finally:
        engine.dispose()


def _cli_context() -> Any:
    """Who acts in the audit log: the OS user running this command, on this machine."""
    import getpass
    import uuid

    from controlplane.domain.audit import ActorKind
    from controlplane.services.audit import Actor, AuditContext, Origin

    try:
        user = getpass.getuser()[:64] or "unknown"
    except (KeyError, OSError):
        user = "unknown"
    return AuditContext(Actor(ActorKind.CLI, user), Origin(address="local", request_id=f"cli-{uuid.uuid4().hex}"))


def cmd_site_create(args: argparse.Namespace) -> int:
    from controlplane.domain import audit as actions
    from controlplane.scenarios import sites_file
    from controlplane.services import admin, audit

    def run(session: Any, settings: Any) -> int:
        path = Path(args.sites_file) if args.sites_file else sites_file(settings.scenarios_dir)
        spec = admin.load_scenario(path, args.name)
        site = admin.create_site(session, name=args.name, spec=spec)
        audit.record(
            session,
            _cli_context(),
            action=actions.SITE_CREATED,
            target_kind="site",
            target_id=site.id,
            detail={"name": site.name, "racks": spec["racks"]["count"]},
        )
        print(f"created site {site.name} ({site.id}) with {spec['racks']['count']} racks from {path}")
        return 0

    return _with_uow(run)


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from controlplane.domain import audit as actions
    from controlplane.services import admin, audit

    def run(session: Any, settings: Any) -> int:
        tenant = admin.create_tenant(session, name=args.name)
        audit.record(
            session,
            _cli_context(),
            action=actions.TENANT_CREATED,
            target_kind="tenant",
            target_id=tenant.id,
            tenant_id=tenant.id,
            detail={"name": tenant.name},
        )
        print(f"created tenant {tenant.name} ({tenant.id})")
        return 0

    return _with_uow(run)


def cmd_key_create(args: argparse.Namespace) -> int:
    from controlplane.domain.enums import KeyScope
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        if args.operator:
            issued = admin.issue_api_key(
                session, pepper=settings.pepper_bytes(), scope=KeyScope.OPERATOR, name=args.name, audit=_cli_context()
            )
        else:
            tenant = admin.get_tenant(session, args.tenant)
            issued = admin.issue_api_key(
                session,
                pepper=settings.pepper_bytes(),
                scope=KeyScope.TENANT,
                name=args.name,
                tenant_id=tenant.id,
                audit=_cli_context(),
            )
        if args.quiet:
            print(issued.secret)
        else:
            print(f"key {issued.key.id} ({issued.key.scope}); shown once, store it now:\n{issued.secret}")
        return 0

    return _with_uow(run)


def cmd_set_policy(args: argparse.Namespace) -> int:
    from controlplane.domain import audit as actions
    from controlplane.services import admin, audit

    changes = {
        name: getattr(args, name) for name in sorted(admin.POLICY_FIELDS) if getattr(args, name, None) is not None
    }
    if not changes:
        raise CliError("nothing to change: give at least one option (see --help)")

    def run(session: Any, settings: Any) -> int:
        tenant = admin.update_tenant_policy(session, tenant_id=args.tenant, changes=changes)
        audit.record(
            session,
            _cli_context(),
            action=actions.TENANT_POLICY_CHANGED,
            target_kind="tenant",
            target_id=tenant.id,
            tenant_id=tenant.id,
            detail={"changes": changes},
        )
        print(f"tenant {tenant.name}: " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
        return 0

    return _with_uow(run)


def cmd_show_tenant(args: argparse.Namespace) -> int:
    import json

    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        print(json.dumps(admin.tenant_policy_view(admin.get_tenant(session, args.tenant)), sort_keys=True))
        return 0

    return _with_uow(run)


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        key = admin.revoke_api_key(session, key_id=args.key_id, audit=_cli_context())
        print(f"revoked {key.id} ({key.scope}); running API processes stop accepting it within their auth cache TTL")
        return 0

    return _with_uow(run)


def cmd_key_rotate(args: argparse.Namespace) -> int:
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        issued = admin.rotate_api_key(session, pepper=settings.pepper_bytes(), key_id=args.key_id, audit=_cli_context())
        if args.quiet:
            print(issued.secret)
        else:
            print(
                f"key {issued.key.id} ({issued.key.scope}) replaces {args.key_id}, revoked now; "
                f"shown once, store it now:\n{issued.secret}"
            )
        return 0

    return _with_uow(run)


def cmd_key_list(args: argparse.Namespace) -> int:
    from controlplane.domain.enums import KeyScope
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        tenant_id = admin.get_tenant(session, args.tenant).id if args.tenant else None
        where = admin.KeyFilter(
            scope=KeyScope(args.scope) if args.scope else None,
            tenant_id=tenant_id,
            node_id=args.node,
            active=True if args.active else None,
        )
        page = admin.list_api_keys(session, where=where, limit=args.limit, cursor=args.cursor)
        for key in page.items:
            state = "active" if key.revoked_at is None else "revoked"
            owner = key.tenant_id or key.node_id or "-"
            created = key.created_at.isoformat(timespec="seconds")
            print(f"{key.id}\t{key.scope}\t{state}\t{owner}\t{key.display_prefix}\t{created}\t{key.name}")
        if page.next_cursor:
            print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
        return 0

    return _with_uow(run)


def cmd_token_list(args: argparse.Namespace) -> int:
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        site_id = admin.get_site(session, args.site).id if args.site else None
        unused = True if args.unused else None
        page = admin.list_bootstrap_tokens(
            session, site_id=site_id, unused=unused, limit=args.limit, cursor=args.cursor
        )
        for t in page.items:
            expires = t.expires_at.isoformat(timespec="seconds")
            used_by = t.used_by_node_id or "-"
            print(
                f"{t.id}\t{admin.token_status(t)}\t{t.display_prefix or '-'}\t{t.rack_id or '-'}\t{expires}\t{used_by}"
            )
        if page.next_cursor:
            print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
        return 0

    return _with_uow(run)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        row = admin.revoke_bootstrap_token(session, token_id=args.token_id, audit=_cli_context())
        print(f"bootstrap token {row.id}: {admin.token_status(row)}")
        return 0

    return _with_uow(run)


def cmd_token_rotate(args: argparse.Namespace) -> int:
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        _, secret = admin.rotate_bootstrap_token(
            session, pepper=settings.pepper_bytes(), token_id=args.token_id, audit=_cli_context()
        )
        print(secret)
        return 0

    return _with_uow(run)


def _aware_time(text: str) -> Any:
    """An ISO 8601 time with its zone (argparse shows the message and exits 2)."""
    from datetime import datetime

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-08T10:00:00Z)") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone (e.g. 2026-12-08T10:00:00Z)")
    return value


def cmd_audit(args: argparse.Namespace) -> int:
    import json

    from controlplane.services import audit

    def run(session: Any, settings: Any) -> int:
        where = audit.AuditFilter(
            actor_id=args.actor,
            action=args.action,
            tenant_id=args.tenant_id,
            target_id=args.target,
            since=args.since,
            until=args.until,
        )
        page = audit.page(session, where=where, limit=args.limit, cursor=args.cursor)
        for entry in page.items:
            print(json.dumps(audit.as_dict(entry), sort_keys=True))
        if page.next_cursor:
            print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
        return 0

    return _with_uow(run)


def cmd_bootstrap_token(args: argparse.Namespace) -> int:
    from controlplane.services import admin

    def run(session: Any, settings: Any) -> int:
        context = _cli_context()
        for _ in range(args.count):
            _, secret = admin.issue_bootstrap_token(
                session,
                pepper=settings.pepper_bytes(),
                site_name=args.site,
                rack=args.rack,
                ttl_s=args.ttl or settings.bootstrap_token_ttl_s,
                audit=context,
            )
            print(secret)
        return 0

    return _with_uow(run)


def _client(args: argparse.Namespace) -> Any:
    from controlplane.client import Client, key_from, server_from

    return Client(server_from(args.server), key_from(args.key))


def cmd_workloads_submit(args: argparse.Namespace) -> int:
    import json

    env = {}
    for item in args.env or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--env takes NAME=VALUE, not {item!r}")
        env[name] = value
    with _client(args) as client:
        wl = client.submit(
            gpus=args.gpus,
            command=args.command,
            gpu_model=args.gpu_model,
            nvlink=args.nvlink,
            priority=args.priority,
            name=args.name,
            env=env or None,
            max_duration_s=args.max_duration_s,
            checkpoint_interval_s=args.checkpoint_interval_s,
            idempotency_key=args.idempotency_key,
        )
    print(json.dumps(wl, sort_keys=True) if args.json else f"submitted {wl['id']}: {wl['state']} ({wl['reason']})")
    return 0


# What `workloads show` prints, in order, and `list` in its columns: (label, field).
_SHOWN = (
    ("id", "id"),
    ("name", "name"),
    ("state", "state"),
    ("reason", "reason"),
    ("pending reason", "pending_reason"),
    ("pending code", "pending_reason_code"),
    ("expected start", "expected_start_at"),
    ("gpus", "gpus"),
    ("gpu model", "gpu_model"),
    ("nvlink", "nvlink"),
    ("priority", "priority"),
    ("max duration s", "max_duration_s"),
    ("checkpoint s", "checkpoint_interval_s"),
    ("created", "created_at"),
    ("scheduled", "scheduled_at"),
    ("started", "started_at"),
    ("finished", "finished_at"),
)


def _shown(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def cmd_workloads_show(args: argparse.Namespace) -> int:
    import json

    with _client(args) as client:
        wl = client.workload(args.workload_id)
    if args.json:
        print(json.dumps(wl, sort_keys=True))
        return 0
    width = max(len(label) for label, _ in _SHOWN)
    for label, name in _SHOWN:
        print(f"{label:<{width}}  {_shown(wl.get(name))}")
    return 0


def cmd_workloads_list(args: argparse.Namespace) -> int:
    import json

    with _client(args) as client:
        page = client.workloads(state=args.state, limit=args.limit, cursor=args.cursor)
    if args.json:
        print(json.dumps(page, sort_keys=True))
        return 0
    columns = ("id", "state", "gpus", "priority", "expected_start_at", "pending_reason_code", "name")
    rows = [[_shown(w.get(c)) for c in columns] for w in page["items"]]
    header = ["ID", "STATE", "GPUS", "PRIORITY", "EXPECTED START", "CODE", "NAME"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if page.get("next_cursor"):
        print(f"more: --cursor {page['next_cursor']}")
    return 0


def _money(text: str) -> Any:
    """An exact dollar amount from the command line (argparse shows the message and exits 2)."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of dollars") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of dollars")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description="GPU-as-a-Service control plane")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("api", help="run the REST API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--access-log", action="store_true")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("scheduler", help="run the scheduler (one leader at a time)")
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("worker", help="run a Celery worker (sweeps, deadlines)")
    p.add_argument("--beat", action="store_true", help="also run the periodic scheduler (beat) in this process")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--name", default="worker")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("beat", help="run Celery beat (the periodic task clock)")
    p.set_defaults(func=cmd_beat)

    p = sub.add_parser("agent", help="run the node agent (see `switchyard agent --help`)", add_help=False)

    p = sub.add_parser("demo", help="run a whole simulated site on this machine")
    p.add_argument("--site", default="demo-rack")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=".switchyard/demo")
    p.add_argument("--no-workloads", action="store_true", help="do not submit the demo workloads")
    p.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop everything this many seconds after the start (0: run until Ctrl-C)",
    )
    p.add_argument(
        "--until-done",
        action="store_true",
        help="stop once every demo workload has ended (--duration caps the wait); "
        "exit non-zero if one did not end, or ended in the wrong state",
    )
    p.add_argument("--no-table", action="store_true", help="print events instead of the live table")
    p.set_defaults(func=cmd_demo)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("upgrade", help="apply migrations")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db_upgrade)

    admin = sub.add_parser("admin", help="operator administration").add_subparsers(dest="admin_command", required=True)
    p = admin.add_parser("create-site", help="create a site and its racks from the scenario file")
    p.add_argument("name")
    p.add_argument("--sites-file", help="default: the sites.json shipped in controlplane/scenarios")
    p.set_defaults(func=cmd_site_create)

    p = admin.add_parser("create-tenant", help="create a tenant")
    p.add_argument("name")
    p.set_defaults(func=cmd_tenant_create)

    p = admin.add_parser("set-policy", help="a tenant's reservation and quotas")
    p.add_argument("tenant", help="tenant name or id")
    p.add_argument("--reserved-gpus", type=int)
    p.add_argument("--max-gpus", type=int)
    p.add_argument("--gpu-hours-limit", type=float, help="GPU-hours per calendar month")
    p.add_argument("--spend-cap-usd", type=_money, help="dollars, exact (e.g. 12500.00)")
    p.add_argument("--over-quota", choices=["reject", "hold"])
    p.add_argument("--price-usd-per-gpu-hour", type=_money, help="dollars per GPU-hour, exact (e.g. 3.20)")
    p.add_argument(
        "--share-weight",
        type=float,
        help="fair share among the tenants of its class, in proportion to this weight (0.01 to 1000; default 1)",
    )
    p.set_defaults(func=cmd_set_policy)

    p = admin.add_parser("show-tenant", help="a tenant's reservation, quotas, price and share weight (JSON)")
    p.add_argument("tenant", help="tenant name or id")
    p.set_defaults(func=cmd_show_tenant)

    p = admin.add_parser("create-key", help="issue an API key (shown once)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="tenant name or id")
    who.add_argument("--operator", action="store_true")
    p.add_argument("--name", default="")
    p.add_argument("--quiet", action="store_true", help="print only the key")
    p.set_defaults(func=cmd_key_create)

    p = admin.add_parser("revoke-key", help="revoke an API key of any scope (tenant, operator, agent)")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_key_revoke)

    p = admin.add_parser("rotate-key", help="replace an API key by a new one (shown once); the old stops at once")
    p.add_argument("key_id")
    p.add_argument("--quiet", action="store_true", help="print only the new key")
    p.set_defaults(func=cmd_key_rotate)

    p = admin.add_parser("list-keys", help="list API keys of every scope, newest first (never their secrets)")
    p.add_argument("--scope", choices=["tenant", "operator", "agent"])
    p.add_argument("--tenant", help="tenant name or id")
    p.add_argument("--node", help="node id")
    p.add_argument("--active", action="store_true", help="only keys not revoked")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="the id printed after 'more:' by the previous page")
    p.set_defaults(func=cmd_key_list)

    p = admin.add_parser("list-bootstrap-tokens", help="list agents' join tokens and their status")
    p.add_argument("--site", help="site name")
    p.add_argument("--unused", action="store_true", help="only tokens neither used nor revoked")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.set_defaults(func=cmd_token_list)

    p = admin.add_parser("revoke-bootstrap-token", help="revoke an unused join token")
    p.add_argument("token_id")
    p.set_defaults(func=cmd_token_revoke)

    p = admin.add_parser("rotate-bootstrap-token", help="replace an unused join token (prints the new one)")
    p.add_argument("token_id")
    p.set_defaults(func=cmd_token_rotate)

    p = admin.add_parser("audit", help="read the audit log, newest first, one JSON object per line")
    p.add_argument("--actor", help="a key id, join token id, or CLI user")
    p.add_argument("--action", help="e.g. credential.revoked")
    p.add_argument("--tenant-id")
    p.add_argument("--target", help="the id of what was acted on")
    p.add_argument("--since", type=_aware_time, help="ISO 8601 with a zone, inclusive")
    p.add_argument("--until", type=_aware_time, help="ISO 8601 with a zone, exclusive")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", type=int, help="the number printed after 'more:' by the previous page")
    p.set_defaults(func=cmd_audit)

    workloads = sub.add_parser(
        "workloads", help="a tenant's workloads over the API (key: SWITCHYARD_API_KEY; server: SWITCHYARD_SERVER)"
    ).add_subparsers(dest="workloads_command", required=True)
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--server", help="the API's URL (default: $SWITCHYARD_SERVER, else http://127.0.0.1:8000)")
    client.add_argument(
        "--key", help="a tenant API key (default: $SWITCHYARD_API_KEY; the environment keeps it private)"
    )
    client.add_argument("--json", action="store_true", help="print the API's JSON")
    p = workloads.add_parser(
        "submit", parents=[client], help="submit a workload: ... submit --gpus 8 -- python3 train.py"
    )
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--gpu-model")
    p.add_argument("--nvlink", choices=["required", "preferred", "none"])
    p.add_argument("--priority", choices=["reserved", "on_demand", "spot"])
    p.add_argument("--name")
    p.add_argument("--env", action="append", metavar="NAME=VALUE")
    p.add_argument("--max-duration-s", type=int)
    p.add_argument(
        "--checkpoint-interval-s",
        type=int,
        help="how often it checkpoints (60 s to 7 days, at most its max duration): a preemption loses the "
        "work since the last checkpoint",
    )
    p.add_argument("--idempotency-key")
    p.add_argument("command", nargs="+", help="the program and its arguments (after --)")
    p.set_defaults(func=cmd_workloads_submit)
    p = workloads.add_parser("list", parents=[client], help="your workloads, newest first, with expected starts")
    p.add_argument("--state")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.set_defaults(func=cmd_workloads_list)
    p = workloads.add_parser("show", parents=[client], help="one workload: state, reason, expected start")
    p.add_argument("workload_id")
    p.set_defaults(func=cmd_workloads_show)

    p = admin.add_parser("bootstrap-token", help="print single-use agent bootstrap tokens")
    p.add_argument("--site", required=True)
    p.add_argument("--rack")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--ttl", type=float, help="seconds (default: 24 h)")
    p.set_defaults(func=cmd_bootstrap_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        # The agent parses its own flags (argparse's REMAINDER drops leading options).
        from agents.daemon import main as agent_main

        code: int = agent_main(argv[1:])
        return code
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - only known user-facing errors are printed plainly
        message = _user_error(exc)
        if message is None:
            raise
        print(f"switchyard: {message}", file=sys.stderr)
        return 2


def _user_error(exc: Exception) -> str | None:
    if isinstance(exc, CliError):
        return str(exc)
    from controlplane.client import ApiError, ClientConfigError

    if isinstance(exc, ApiError | ClientConfigError):
        return str(exc)
    try:
        from pydantic import ValidationError

        from controlplane.config import ConfigError
        from controlplane.domain.errors import DomainError
        from controlplane.store.migrate import SchemaNotCurrent
    except ImportError:
        return None
    if isinstance(exc, SchemaNotCurrent):
        return str(exc)
    if isinstance(exc, DomainError):
        return exc.detail
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return f"invalid configuration: {exc}"
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:
        return None
    if isinstance(exc, OperationalError):
        return f"cannot use the database: {exc.orig}"
    return None


if __name__ == "__main__":
    sys.exit(main())
