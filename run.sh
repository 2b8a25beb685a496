#!/usr/bin/env bash
# One entry point for people and CI: sets up the environment when needed, then
#   bash run.sh pipeline [flags]   runs the whole pipeline (see --help); progress on the
#                                  terminal, the full log in <output_dir>/logs/
#   bash run.sh test [pytest args] runs the test suite
#   bash run.sh bench NAME         runs bench/NAME.py: its figures on the terminal, its
#                                  log in outputs/logs/bench-NAME-<time>.log
#   bash run.sh <module> [args]    runs `python -m <module>` in the environment
# The virtualenv lives in .venv and is reused; it is reinstalled only when
# setup.py or requirements/constraints.txt change (pip's output goes to
# .venv/install.log).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
STAMP="$VENV/.installed"

find_python() {
  # Python 3.10 is what TFX 1.16 supports; on these machines it comes from pyenv.
  if command -v pyenv >/dev/null 2>&1; then
    local v
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)' | sort -V | tail -1 || true)
    if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python3.10"; return; fi
  fi
  for p in python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      command -v "$p"; return
    fi
  done
  echo "error: Python 3.10 not found (install it, e.g. 'pyenv install 3.10.13')" >&2
  exit 1
}

setup_env() {
  local want
  want=$(cat setup.py requirements/constraints.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then return; fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV" >&2
    "$(find_python)" -m venv "$VENV"
  fi
  echo "== installing the pinned dependency set (first time: ~5 min, ~3.3 GB; log: $VENV/install.log)" >&2
  if ! "$VENV/bin/pip" install --disable-pip-version-check \
      -c requirements/constraints.txt -e '.[test]' >"$VENV/install.log" 2>&1; then
    tail -n 20 "$VENV/install.log" >&2
    echo "error: pip install failed; the whole output is in $VENV/install.log" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
}

cmd=${1:-pipeline}
shift || true
setup_env
# The google-cloud packages TFX pulls in warn about Python 3.10 on every import.
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning,ignore::DeprecationWarning}
case "$cmd" in
  # The runner keeps TensorFlow's C++ log lines in its log file (and shows them
  # with --verbose), so they are not filtered here.
  pipeline) exec "$VENV/bin/python" -m pipeline.local.runner "$@" ;;
esac
# Everything else: TensorFlow's C++ INFO and WARNING lines off.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
case "$cmd" in
  test)
    if ! command -v chromium >/dev/null 2>&1; then
      echo "warning: Chromium is not installed, so the gallery's browser tests will fail;" \
           "install it with 'sudo apt-get install chromium' (Debian/Ubuntu)" >&2
    fi
    exec "$VENV/bin/python" -m pytest "$@" ;;  # no path given: pytest.ini's testpaths (tests/)
  bench)
    name=$1; shift
    mkdir -p outputs/logs
    log="outputs/logs/bench-$name-$(date -u +%Y%m%d-%H%M%S).log"
    if ! "$VENV/bin/python" -m "bench.$name" "$@" 2>"$log"; then
      tail -n 20 "$log" >&2
      echo "error: bench $name failed; its whole log: $log" >&2
      exit 1
    fi ;;
  *) exec "$VENV/bin/python" -m "$cmd" "$@" ;;
esac
