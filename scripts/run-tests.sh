#!/usr/bin/env bash
# Run the whole suite. pytest exits 5 when no test ran: that is a failure here,
# never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run-tests: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$rc"
