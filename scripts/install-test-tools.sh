#!/usr/bin/env bash
# System tools the tests use, from Debian's packages, installed only when missing (as root or via sudo):
#   promtool and prometheus  the monitoring tests (docker/'s config, rules, dashboard; a real Prometheus)
#   chromium                 the playground tests (Playwright drives it; no browser is ever downloaded)
#   nginx                    the gateway tests (deploy/gateway/'s config checked and run on loopback)
#   nodejs and npm           scripts/install-workerd.sh (the Workers binding tests' runtime, from npm)
#   postgresql, redis-server the shared stores of many replicas (tests start private servers on loopback)
set -euo pipefail
missing=()
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
{ command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } || missing+=(chromium)
{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || missing+=(nginx)
{ command -v node >/dev/null && command -v npm >/dev/null; } || missing+=(nodejs npm)
{ command -v postgres >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; } || missing+=(postgresql)
{ command -v redis-server >/dev/null; } || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "missing test tools: ${missing[*]}; install them with your system's package manager" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
echo "installing Debian's packages: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The prometheus package enables a system service; the tests start their own server on a free port.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  "${sudo[@]}" systemctl disable --now prometheus
fi
# The same for the services these packages start: the tests run their own servers.
for service in nginx postgresql redis-server; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    "${sudo[@]}" systemctl disable --now "$service"
  elif command -v service >/dev/null; then
    "${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
  fi
done
