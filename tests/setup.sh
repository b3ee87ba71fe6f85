#!/usr/bin/env bash
# What the test suite needs from the system, installed when missing.
#
# Called by the README's test command and therefore by .ci/run (which runs exactly
# that command), so the two cannot drift. The Python packages come from
# pyproject.toml's `test` extra; this script only adds what pip cannot install:
#   - Debian's Chromium, for the console's real-browser tests (Playwright drives
#     /usr/bin/chromium; no browser build is ever downloaded);
#   - Prometheus and promtool, for the scrape and rules tests;
#   - Node.js and npm (Debian's nodejs, npm) and then the npm packages of the
#     node-opcua machine emulator (tests/opcua) and of the virtual VDA 5050
#     vehicles (tests/vda5050), exactly as their package-lock.json files pin them;
#   - Mosquitto, the MQTT broker of the VDA 5050 tests (only installed: the tests
#     start private brokers on free loopback ports, never the system service).
# As root it installs the Debian packages with apt-get; otherwise it says what to
# install and fails. Each step is skipped when its result is already there.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || { [[ " ${missing[*]-} " == *" prometheus "* ]] || missing+=(prometheus); }
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || [[ " ${missing[*]-} " == *" mosquitto "* ]] || missing+=(mosquitto)

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

# A peer's npm packages: `npm ci` again only when its lock file changed since the last install.
npm_packages() {
    local dir lock
    dir="$(dirname "$0")/$1"
    lock="$dir/node_modules/.package-lock.json"
    if [ -f "$lock" ] && [ "$lock" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
}
npm_packages opcua
npm_packages vda5050
