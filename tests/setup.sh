#!/usr/bin/env bash
# What the test suite needs from the system, installed when missing.
#
# Called by the README's test command and therefore by .ci/run (which runs exactly
# that command), so the two cannot drift. The Python packages come from
# pyproject.toml's `test` extra; this script only adds what pip cannot install:
#   - Debian's Chromium, for the console's real-browser tests (Playwright drives
#     /usr/bin/chromium; no browser build is ever downloaded);
#   - Prometheus and promtool, for the scrape and rules tests;
#   - Node.js and npm (Debian's nodejs, npm) and then the node-opcua machine
#     emulator's npm packages, exactly as tests/opcua/package-lock.json pins them.
# As root it installs the Debian packages with apt-get; otherwise it says what to
# install and fails. Each step is skipped when its result is already there.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || { [[ " ${missing[*]-} " == *" prometheus "* ]] || missing+=(prometheus); }
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

# The emulator's packages: `npm ci` again only when the lock file changed since the last install.
npm_packages() {
    local dir lock
    dir="$(dirname "$0")/opcua"
    lock="$dir/node_modules/.package-lock.json"
    if [ -f "$lock" ] && [ "$lock" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
}

# (No early exit when nothing is missing: the sections below must still run.)
if [ ${#missing[@]} -gt 0 ]; then
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/setup.sh: the tests need ${missing[*]} (Debian packages), which are missing." >&2
    echo "Install them as root, then run the test command again:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/setup.sh: the tests need ${missing[*]}, and this system has no apt-get;" >&2
    echo "install them with your package manager (Chromium at /usr/bin/chromium)." >&2
    exit 1
fi
echo "tests/setup.sh: installing ${missing[*]} with apt-get" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
npm_packages

# ---------------------------------------------------------------------------------
# VDA 5050 peers (issue 15): Debian's Mosquitto and vda-5050-lib's virtual vehicles.
# Mosquitto is only installed: the tests start private brokers on free loopback
# ports (tests/helpers/vda5050_peers.py), never the system service. Node.js and npm
# are checked again so this section stands on its own; the vehicles' npm packages
# are installed exactly as tests/vda5050/package-lock.json pins them, again only
# when the lock file changed since the last install.
vda5050_missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || vda5050_missing+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || [[ " ${vda5050_missing[*]-} " == *" mosquitto "* ]] || vda5050_missing+=(mosquitto)
command -v node >/dev/null 2>&1 || vda5050_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || vda5050_missing+=(npm)
if [ ${#vda5050_missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "tests/setup.sh: the VDA 5050 tests need ${vda5050_missing[*]} (Debian packages), which are missing." >&2
        echo "Install them as root, then run the test command again:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y ${vda5050_missing[*]}" >&2
        exit 1
    fi
    echo "tests/setup.sh: installing ${vda5050_missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${vda5050_missing[@]}" >/dev/null
fi
vda5050_dir="$(dirname "$0")/vda5050"
vda5050_lock="$vda5050_dir/node_modules/.package-lock.json"
if ! { [ -f "$vda5050_lock" ] && [ "$vda5050_lock" -nt "$vda5050_dir/package-lock.json" ]; }; then
    npm ci --prefix "$vda5050_dir" --no-audit --no-fund --loglevel=error >/dev/null
fi
