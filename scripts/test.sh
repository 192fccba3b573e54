#!/usr/bin/env bash
# Install, then run the whole test suite inside a network namespace made here (unshare -rn + a veth
# pair), so WebRTC has a non-loopback interface and nothing touches the host's own network.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CALLBOARD_IN_TEST_NETNS:-}" != "1" ]; then
  bash scripts/setup.sh   # outside the namespace: the registries are reachable only from here
  export CALLBOARD_IN_TEST_NETNS=1
  exec unshare -rn bash -c '
    set -e
    ip link set lo up
    ip link add veth0 type veth peer name veth1
    ip addr add 10.99.0.1/24 dev veth0
    ip addr add 10.99.0.2/24 dev veth1
    ip link set veth0 up
    ip link set veth1 up
    exec bash scripts/test.sh "$@"' bash "$@"
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
