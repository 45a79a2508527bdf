# Sourced by the demo and test commands: make ./.venv hold this project with the given extras.
# Re-installs only when pyproject.toml changed, so a second run starts at once.
ensure_venv() {
  local extras="$1" root venv stamp want
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  venv="${VENV:-$root/.venv}"
  stamp="$venv/.installed-$extras"
  want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv ..." >&2
    python3 -m venv "$venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing synthetic-monitor[$extras] into $venv (first run takes about a minute) ..." >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]"
    echo "$want" > "$stamp"
  fi
  VENV_PY="$venv/bin/python"
}
