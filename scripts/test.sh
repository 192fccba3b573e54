#!/usr/bin/env bash
# Install, then run the whole test suite inside a network namespace made here (unshare -rn + a veth
# pair), so WebRTC has a non-loopback interface and nothing touches the host's own network.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CALLBOARD_IN_TEST_NETNS:-}" != "1" ]; then
  bash scripts/setup.sh   # outside the namespace: the registries are reachable only from here
  exec bash scripts/netns.sh bash scripts/test.sh "$@"
fi

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit $rc
