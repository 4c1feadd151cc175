#!/bin/sh
# Run the whole test suite (lint, type checks, unit, property and integration tests).
# Installs what it needs first (see scripts/bootstrap.sh). Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh
# Tests use the checkout; the daemon tests also run twistd from a packaged wheel.
PYTHONPATH=$(pwd) exec .venv/bin/python -m pytest "$@"
