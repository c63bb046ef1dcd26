#!/usr/bin/env bash
# The monitoring tests need promtool and prometheus: install Debian's prometheus package when
# either is missing (as root, or through sudo). Nothing to do when both are on the PATH.
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "promtool and prometheus are missing; install your system's prometheus package" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
echo "installing Debian's prometheus package (promtool, prometheus)"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package enables a system service; the tests start their own server on a free port.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  "${sudo[@]}" systemctl disable --now prometheus
fi
promtool --version | head -1
