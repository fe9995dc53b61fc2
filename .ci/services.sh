#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis the tests need are running on loopback.
# Uses what is already there; otherwise installs Debian's packages and starts them.
set -euo pipefail
pg_url=${1:-postgresql://postgres@127.0.0.1:5432/test}
redis_url=${2:-redis://127.0.0.1:6379/0}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

redis_up() { command -v redis-cli >/dev/null && redis-cli -u "$redis_url" ping 2>/dev/null | grep -q PONG; }
pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    as_root apt-get update -qq && as_root apt-get install -y -qq redis-server >/dev/null
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/switchyard-test-redis.log
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi
redis_up || { echo "Redis is not reachable at $redis_url" >&2; exit 1; }

if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    as_root apt-get update -qq && as_root apt-get install -y -qq postgresql >/dev/null
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 100); do pg_up && break; sleep 0.1; done
fi
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# Tests connect as postgres without a password over TCP: make sure that works.
if ! psql "$pg_url" -qtAc 'select 1' >/dev/null 2>&1; then
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
  if [ -n "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main reload
  fi
  db=${pg_url##*/}
  as_root su postgres -c "createdb $db" 2>/dev/null || true
fi
psql "$pg_url" -qtAc 'select 1' >/dev/null || { echo "cannot connect to $pg_url" >&2; exit 1; }
# promtool validates the agent's /metrics in the exporter tests; the prometheus server scrapes
# real agents in tests/e2e/test_prometheus_dashboard.py. Both come with Debian's prometheus.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq prometheus >/dev/null
fi
command -v promtool >/dev/null || { echo "promtool is not installed" >&2; exit 1; }
command -v prometheus >/dev/null || { echo "prometheus is not installed" >&2; exit 1; }
echo "services: PostgreSQL, Redis, prometheus and promtool are ready"
