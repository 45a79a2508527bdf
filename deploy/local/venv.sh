# Sourced by the demo and test commands: make ./.venv hold this project with the given extras.
# Every version comes from deploy/constraints.txt (the lock). Re-installs only when
# pyproject.toml or the lock changed, so a second run starts at once.
ensure_venv() {
  local extras="$1" root venv stamp want
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  venv="${VENV:-$root/.venv}"
  stamp="$venv/.installed-$extras"
  want="$(cat "$root/pyproject.toml" "$root/deploy/constraints.txt" | sha256sum | cut -c1-16)"
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv ..." >&2
    python3 -m venv "$venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing synthetic-monitor[$extras] into $venv (first run takes about a minute) ..." >&2
    local log="$venv/pip-install.log"
    if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
           "$venv/bin/python" -m pip install --disable-pip-version-check \
             -c "$root/deploy/constraints.txt" -e "$root[$extras]"; } >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "pip install failed; full log: $log" >&2
      return 1
    fi
    echo "$want" > "$stamp"
  fi
  VENV_PY="$venv/bin/python"
}
