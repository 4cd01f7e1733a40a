#!/usr/bin/env bash
# Reproduce the bundled tiny model (models/tiny) on a CPU: two stages, about 38 minutes on
# 2 cores, seeded (budgets are wall-clock minutes, so another machine does a different number
# of steps; pass --steps to `flashwatch tiny train` for bit-reproducible runs).
#
# 1. oracle: the LLM learns to read "visual tokens" built from the ground truth (the sum of its
#    own word embeddings per actor), without pixels; actor slots only (--compact), mostly
#    presence and "did X happen" questions (--focus). See reasoner/tiny/oracle.py for why.
# 2. video: the real UMT encoder + projector learn to produce what the LLM learned to read
#    (answer loss through the frozen LLM, plus distillation onto the oracle tokens), then
#    everything trains together.
set -euo pipefail
cd "$(dirname "$0")/.."
FW=.venv/bin/flashwatch
OUT=${1:-models/tiny}
STAGE1=$(mktemp -d /tmp/fw-tiny-oracle.XXXX)
$FW tiny train --out "$STAGE1" --stage oracle --compact --focus --minutes 16 --seed 0 \
    --min-clips 1 --max-clips 4 --scenes 150 --questions 16 --lr 2e-3 --warmup 30
$FW tiny train --out "$OUT" --init "$STAGE1" --stage video --focus --minutes 20 --seed 2 \
    --min-clips 1 --max-clips 8 --scenes 150 --questions 16 --lr 1e-3 --warmup 20 \
    --freeze-llm-steps 150 --distill-weight 30
rm -rf "$STAGE1"
$FW tiny eval --model "$OUT" --windows 60
