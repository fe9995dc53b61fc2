#!/usr/bin/env bash
# A user clones the repository alone. Clone what is committed into an empty folder (nothing
# beside it) and run the unit tests there, importing the clone's code, not this checkout's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d /tmp/switchyard-lone.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$root" "$work/switchyard"
cd "$work/switchyard"
[ "$(ls -A "$work")" = switchyard ] || { echo "lone clone: $work holds more than the clone" >&2; exit 1; }
export PYTHONPATH="$PWD"
where=$("$python" -c 'import controlplane, agents; print(controlplane.__file__, agents.__file__)')
case "$where" in
  "$PWD"/controlplane/*" $PWD"/agents/*) ;;
  *) echo "lone clone: imported the wrong code: $where" >&2; exit 1 ;;
esac
"$python" -m pytest -q -p no:cacheprovider tests/unit
