#!/usr/bin/env bash
# Install, then run the server on its embedded SQLite store with the dev project (devkey / secret).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/callboard server --dev "$@"
