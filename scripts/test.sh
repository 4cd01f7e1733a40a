#!/usr/bin/env bash
# The test command (README, .ci/run). Runs from the repo root after scripts/bootstrap.sh.
#
# 1. The whole suite except GPU tests and tests marked `isolated`, in one pytest process.
# 2. Each `isolated` test in a fresh pytest process of its own. These tests passed alone but
#    hung intermittently after other tests in the same process (cameras stuck "connecting"
#    after the Kafka-broker-kill scenario); the cause is not found yet, so they run apart
#    instead of being skipped. Extra arguments go to step 1.
# Tests marked `unstable` (intermittent failures, cause unknown) are listed, not run.
# Exit status: the first failing pytest's (5, "no tests collected", fails too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
"$PY" -m pytest -q -m "not gpu and not isolated and not unstable" --durations=15 "$@"
mapfile -t isolated < <("$PY" -m pytest -q --collect-only -m "isolated and not gpu and not unstable" 2>/dev/null | grep '::')
for test in "${isolated[@]}"; do
    echo "isolated: $test"
    "$PY" -m pytest -q "$test"
done
echo "isolated tests: ${#isolated[@]} passed"
mapfile -t unstable < <("$PY" -m pytest -q --collect-only -m unstable 2>/dev/null | grep '::')
for test in "${unstable[@]}"; do
    echo "NOT RUN (marked unstable, see the test's comment): $test"
done
