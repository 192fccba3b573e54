#!/usr/bin/env bash
# Run a command inside a private network namespace with a veth pair (10.99.0.1/24 <-> 10.99.0.2/24),
# which scripts/test.sh runs the suite in: WebRTC needs a non-loopback interface, and nothing the
# command does reaches the host's own network. Needs unprivileged user namespaces and iproute2.
#   bash scripts/netns.sh .venv/bin/python bench/rooms.py [--quick] [--json]
# Already inside (CALLBOARD_IN_TEST_NETNS=1): runs the command as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
  echo "usage: bash scripts/netns.sh COMMAND [ARGS...]" >&2
  exit 2
fi
if [ "${CALLBOARD_IN_TEST_NETNS:-}" = "1" ]; then
  exec "$@"
fi
export CALLBOARD_IN_TEST_NETNS=1
exec unshare -rn bash -c '
  set -e
  ip link set lo up
  ip link add veth0 type veth peer name veth1
  ip addr add 10.99.0.1/24 dev veth0
  ip addr add 10.99.0.2/24 dev veth1
  ip link set veth0 up
  ip link set veth1 up
  exec "$@"' bash "$@"
