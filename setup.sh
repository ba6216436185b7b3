#!/usr/bin/env bash
# Sets KeelDB up in ./.venv: a virtual environment holding the project (editable) and its
# test tools. The environment is built on the fastest CPython 3.11 the machine has: a
# distribution build (compiled with profile-guided and link-time optimisation, libpython
# linked in) when there is one, installing Debian's python3.11 if apt-get can; otherwise the
# `python3` on PATH. KEELDB_PYTHON=/path/to/python picks the interpreter instead.
# docs/performance.md ("Which CPython runs the server") has the measurements behind the choice.
set -euo pipefail
cd "$(dirname "$0")"

usable() {
    # A CPython 3.11 or newer that can make a virtual environment with pip in it.
    "$1" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2> /dev/null
}

python="${KEELDB_PYTHON:-}"
if [ -z "$python" ]; then
    distribution=/usr/bin/python3.11
    if ! usable "$distribution" && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq python3.11 python3.11-venv > /dev/null 2>&1 ||
            { apt-get update -qq > /dev/null 2>&1 &&
                apt-get install -y -qq python3.11 python3.11-venv > /dev/null 2>&1; } ||
            echo "setup: Debian's python3.11 could not be installed; using python3" >&2
    fi
    if usable "$distribution"; then
        python="$distribution"
    else
        python="$(command -v python3)"
    fi
fi

base() { "$1" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))'; }
if [ ! -x .venv/bin/python ] || [ "$(base .venv/bin/python)" != "$(base "$python")" ]; then
    rm -rf .venv
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,native]'

# The request path compiled with mypyc (keeldb/native.py): it needs a C compiler and the
# interpreter's headers. Without them, or if the build fails, KeelDB runs interpreted.
headers="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if { [ ! -f "$headers/Python.h" ] || ! command -v cc > /dev/null; } &&
    command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
    version="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    apt-get install -y -qq gcc "python$version-dev" > /dev/null 2>&1 ||
        { apt-get update -qq > /dev/null 2>&1 &&
            apt-get install -y -qq gcc "python$version-dev" > /dev/null 2>&1; } || true
fi
.venv/bin/keeldb native build || true
echo "KeelDB is set up in .venv ($(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'), $python)."
echo "Run the server:  .venv/bin/keeldb serve"
echo "Run the tests:   .venv/bin/python -m pytest -q"
