#!/usr/bin/env bash
# Installs everything rackpilot needs on a fresh Debian 12 machine. Idempotent: each
# step checks first and does nothing when its stamp matches. Uses sudo only when not root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAMPS="$ROOT/.devstack/stamps"
mkdir -p "$STAMPS"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
log() { printf '[setup] %s\n' "$*" >&2; }
APT_WAIT=(-o DPkg::Lock::Timeout=600)  # wait for another apt (unattended-upgrades, a parallel setup)

# 0. Python >= 3.11 reads scripts/tools.toml (tomllib); Debian 12's python3 is 3.11 ----
if ! python3 -c 'import sys, tomllib; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  log "apt: installing python3 (scripts/check_tools.py reads scripts/tools.toml with it)"
  $SUDO apt-get "${APT_WAIT[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends python3 >/dev/null
fi

# 1. Debian packages: the ones scripts/tools.toml names that are not installed -----------
# (Node.js may come from another vendor's package: tools.toml accepts any node >= 18 with npm.)
apt_missing="$(python3 scripts/check_tools.py apt-missing)"
read -ra missing <<<"$apt_missing"
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  $SUDO apt-get "${APT_WAIT[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's postgresql package starts a system cluster; rackpilot never uses it.

# 2. Python virtualenv ------------------------------------------------------------
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then PY="$c"; break; fi
  done
fi
[ -n "$PY" ] || { log "need Python >= 3.11"; exit 1; }
if [ ! -x .venv/bin/python ]; then
  log "venv: creating with $PY"
  "$PY" -m venv .venv
fi
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$want" ]; then
  log "pip: installing rackpilot[dev]"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$STAMPS/pip"
fi

# 3. Supabase CLI, pinned through npm ---------------------------------------------
want="$(sha256sum package-lock.json | cut -c1-16)"
if [ ! -x node_modules/.bin/supabase ] || [ "$(cat "$STAMPS/npm" 2>/dev/null)" != "$want" ]; then
  log "npm: installing the Supabase CLI from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$STAMPS/npm"
fi

# 4. Deno npm cache from the lock file --------------------------------------------
export DENO_DIR="$ROOT/.cache/deno"
if [ -f supabase/functions/deno.json ]; then
  want="$(cat supabase/functions/deno.json supabase/functions/deno.lock 2>/dev/null | sha256sum | cut -c1-16)"
  if [ "$(cat "$STAMPS/deno" 2>/dev/null)" != "$want" ]; then
    log "deno: filling the npm cache from supabase/functions/deno.lock"
    (cd supabase/functions && "$ROOT/.venv/bin/deno" install --frozen --quiet)
    echo "$want" > "$STAMPS/deno"
  fi
fi
# 5. Every tool and package in scripts/tools.toml present? (no stamp: the check is the truth)
python3 scripts/check_tools.py check -q || { log "not ready: see above"; exit 1; }
log "ready"
