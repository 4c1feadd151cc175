#!/bin/sh
# Install what callbackd needs on a fresh Debian machine, idempotently:
# Debian packages (only the missing ones, with apt-get), a virtualenv in .venv,
# and callbackd itself (a normal, non-editable install) with its test extras.
# Sourced by scripts/run.sh and scripts/test.sh; safe to run again.
set -eu
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v prosody >/dev/null 2>&1 || missing="$missing prosody"
command -v ssh >/dev/null 2>&1 || missing="$missing openssh-client"
command -v ssh-keygen >/dev/null 2>&1 || missing="$missing openssh-client"
# the SMS gateway of the SMS tests (bearerbox, smsbox; fakesmsc is in kannel-extras)
command -v bearerbox >/dev/null 2>&1 || missing="$missing kannel"
[ -x /usr/lib/kannel/test/fakesmsc ] || missing="$missing kannel-extras"
# the portal's browser test
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
# the IVR's prompts (callbackd-admin make-sounds)
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v sox >/dev/null 2>&1 || missing="$missing sox"
if [ ! -x .venv/bin/python ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing="$missing python3-venv"
fi
if [ -n "$missing" ]; then
    echo "bootstrap: installing Debian packages:$missing"
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: need root (or sudo) for apt-get install$missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # Debian starts the packaged redis-server and prosody as system services; the tests
    # start private ones (tests/procs.py, tests/xmpp/prosody.py), so stop and disable those.
    for unit in redis-server prosody kannel; do
        if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$unit" >/dev/null 2>&1 || true; fi
        service "$unit" stop >/dev/null 2>&1 || true
    done
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.callbackd-installed
if [ ! -f "$stamp" ] || [ -n "$(find setup.cfg pyproject.toml callbackd twisted -newer "$stamp" -print -quit)" ]; then
    echo "bootstrap: installing callbackd and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q '.[test,bench]'
    touch "$stamp"
fi
