#!/usr/bin/env bash
# workerd, Cloudflare's Workers runtime, for the Workers binding tests (tests/workers/): from the npm
# registry at the version tests/workers/package-lock.json pins, integrity-checked, into
# tests/workers/node_modules (git ignores it). Installed only when missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/../tests/workers"
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: scripts/install-test-tools.sh installs it" >&2; exit 1; }
done
pinned=$(node -p 'require("./package-lock.json").packages["node_modules/workerd"].version')
installed=$(node -p 'try { require("./node_modules/workerd/package.json").version } catch { "" }')
[ "$installed" = "$pinned" ] && [ -x node_modules/.bin/workerd ] && exit 0
echo "installing workerd $pinned from the npm registry"
npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/workerd --version
