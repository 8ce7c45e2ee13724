#!/usr/bin/env bash
# Runs every suite against one throwaway local stack: pytest, pgTAP, deno test.
# Exits non-zero if any suite fails; always tears the stack down.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$ROOT/node_modules/.bin:$PATH"
export DENO_DIR="$ROOT/.cache/deno"
PY="$ROOT/.venv/bin/python"
# every program the suites run must be there (scripts/tools.toml): name what is missing, and its package
python3 "$ROOT/scripts/check_tools.py" check -q || exit 1

STACK_DIR="$(mktemp -d /tmp/rackpilot-test.XXXXXX)"
chmod 755 "$STACK_DIR"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export RACKPILOT_STACK_DIR="$STACK_DIR"
export RACKPILOT_API_PORT="$(free_port)"
export RACKPILOT_DB_PORT="$(free_port)"
export RACKPILOT_TEST_STACK=shared
# every test user signs in from 127.0.0.1: raise the per-IP auth limits (devstack/stack/config.py)
export RACKPILOT_AUTH_SIGN_IN_LIMIT=100000 RACKPILOT_AUTH_REFRESH_LIMIT=100000
cleanup() { "$PY" -m devstack.cli dev destroy >/dev/null 2>&1 || true; rm -rf "$STACK_DIR"; }
trap cleanup EXIT

echo "== local stack (state in $STACK_DIR)"
"$PY" -m devstack.cli dev up || { echo "stack failed to start"; tail -50 "$STACK_DIR/logs/gateway.log" 2>/dev/null; exit 1; }
set -a; eval "$("$PY" -m devstack.cli dev env)"; set +a

failed=()
echo "== lint (make lint: ruff check, ruff format --check, mypy)"
make -s --no-print-directory lint-check || failed+=("lint")

# pytest processes at once (docs/environment.md): about 70% of a serial run waits on
# processes, sockets and simulators, so two share 2 cores well. A file's tests stay in one
# process (its module fixtures start once); each process but the first has its own stack
# (tests/conftest.py).
WORKERS="${RACKPILOT_TEST_WORKERS:-2}"
XDIST=()
[ "$WORKERS" -gt 1 ] && XDIST=(-n "$WORKERS" --dist loadfile)
echo "== pytest ($WORKERS process(es))"
"$PY" -m pytest -q -p no:cacheprovider --durations=25 "${XDIST[@]}" "$@"
rc=$?
[ $rc -eq 0 ] || failed+=("pytest($rc)")

echo "== pgTAP (supabase/tests)"
if ls supabase/tests/*.sql >/dev/null 2>&1; then
  PGPASSWORD="$("$PY" -c 'import json,os;print(json.load(open(os.environ["RACKPILOT_STACK_DIR"]+"/secrets.json"))["postgres_password"])')" \
    pg_prove -h 127.0.0.1 -p "$RACKPILOT_DB_PORT" -U postgres -d postgres supabase/tests/*.sql || failed+=("pgtap")
fi

echo "== deno test (supabase/functions)"
if ls supabase/functions/*/*.test.ts supabase/functions/tests/*.test.ts >/dev/null 2>&1; then
  (cd supabase/functions && deno test --frozen --allow-env --allow-net --allow-read) || failed+=("deno")
fi

# the REST pool replaces a connection whose wrapper refused on its own schema and logs it
# (devstack/stack/rest/service.py, _wrapper_refused): say so here, where a run's reader looks
grep -h "REST connection" "$STACK_DIR"/logs/*.log 2>/dev/null | tail -5

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed"
