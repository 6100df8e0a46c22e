#!/usr/bin/env bash
# One entry point that creates the environment itself, then runs a job:
#   bash launch/run.sh demo    every implemented paper's smoke pipeline on CPU, then a results table
#   bash launch/run.sh test    the test suite (CPU, 8 fake devices; excludes gpu and slow markers; 2 workers,
#                              PYTEST_WORKERS=0 for one process)
# Extra arguments go to the job (e.g. `bash launch/run.sh test -k train`).
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:?usage: bash launch/run.sh demo|test [args...]}; shift

find_python() {
  # Candidates in order; each must really run Python 3.12 (pyenv shims exist even when 3.12 is not selected).
  local candidates=(python3.12)
  command -v pyenv >/dev/null 2>&1 && candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12)
  candidates+=("$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12)
  for candidate in "${candidates[@]}"; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      command -v "$candidate"; return; fi
  done
  echo "paperclub needs Python 3.12 (jax 0.11 requires it): install python3.12 or pyenv's 3.12.1, then rerun." >&2
  exit 1
}

venv=.venv
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
# A venv whose interpreter is gone (python upgraded or removed: a dangling bin/python) or is not 3.12 (made by
# another Python) can never work: say so and rebuild it instead of failing the same way on every rerun.
if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
  echo "$venv is broken (its bin/python is missing, dangling or not Python 3.12): rebuilding it" >&2
  rm -rf "$venv"
fi
if [ ! -f "$stamp" ]; then
  python=$(find_python)
  echo "creating $venv with $python (about 2 minutes, 1.3 GB)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e ".[notebooks]"
  touch "$stamp"
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
case "$job" in
  demo) exec "$venv/bin/python" -m launch.demo "$@" ;;
  test)
    # One persistent compilation cache per test run, shared by both workers and every subprocess (demo,
    # notebooks, launch scripts): the smoke pipelines compile the same programs several times over, and a hit
    # skips XLA's compile. A size limit turns on the cache's file lock, so a worker never reads an entry the
    # other is still writing. A cache the caller set is used as it is.
    if [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
      JAX_COMPILATION_CACHE_DIR=$(mktemp -d -t paperclub-jax-cache.XXXXXX)
      export JAX_COMPILATION_CACHE_DIR
      trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
    fi
    export JAX_COMPILATION_CACHE_MAX_SIZE=${JAX_COMPILATION_CACHE_MAX_SIZE:-4000000000}
    export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.5}
    set +e
    # Two workers, whole files each (module fixtures are built once): most of the suite is single-threaded XLA
    # compilation, so a second process nearly halves the wall time on a 2-core machine. PYTEST_WORKERS=0: serial.
    workers=${PYTEST_WORKERS:-2}
    if [ "$workers" = 0 ]; then "$venv/bin/python" -m pytest -q "$@"
    else "$venv/bin/python" -m pytest -q -n "$workers" --dist loadfile "$@"; fi
    rc=$?
    if [ $rc -eq 5 ]; then echo "pytest found no tests: treating as failure" >&2; exit 1; fi
    exit $rc ;;
  *) echo "unknown job '$job': use demo or test" >&2; exit 2 ;;
esac
