#!/bin/sh
# Run the daemon on its embedded defaults: a private redis-server under var/,
# the built-in simulated Asterisk, demo accounts, HTTP (the web portal) on 127.0.0.1:8080 and the
# SSH manhole on 127.0.0.1:2222. Installs what it needs first (scripts/bootstrap.sh).
# Extra arguments go to twistd, e.g. scripts/run.sh --logfile=var/callbackd.log
set -eu
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh
mkdir -p var
# A manhole key for this checkout, made once, so the operator can log in.
if [ ! -f var/manhole_key ]; then
    ssh-keygen -q -t ed25519 -N '' -C callbackd-manhole -f var/manhole_key
fi
cp var/manhole_key.pub var/manhole_authorized_keys
echo "callbackd: portal  http://127.0.0.1:8080/  (alice or operator, password demo-password)"
echo "callbackd: health  http://127.0.0.1:8080/healthz   metrics http://127.0.0.1:8080/metrics"
echo "callbackd: manhole ssh -p 2222 -i var/manhole_key admin@127.0.0.1"
exec .venv/bin/twistd --nodaemon --pidfile= callbackd -c etc/callbackd.ini "$@"
