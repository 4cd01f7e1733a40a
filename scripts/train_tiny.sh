#!/usr/bin/env bash
# Train the tiny synthetic-world model (models/tiny) on a CPU, seeded, in six stages.
# Budgets are fixed step counts, so a rerun on the same thread count does the same work
# (about 37 minutes on 2 cores; BENCHMARKS.md "Tiny model, stop 15" has the stage times
# and what the model reached). THREADS=1 halves the cores used and takes longer. Questions
# include hard negatives (an actor on screen that does not do the event) from the first
# stage on; scenes alternate between 160x120 and 320x240 cameras (`--renders`).
#
# 1. oracle: the LLM (256 wide; 128 never learned the matching) learns to read "visual
#    tokens" built from the ground truth (the sum of its own word embeddings per actor),
#    without pixels; actor slots only (--compact), mostly presence and "did X happen"
#    questions (--focus). See reasoner/tiny/oracle.py for why.
# 2. oracle again at half the learning rate, then with the filler tokens a real clip has
#    (64 per clip): a compact-only LLM fell from 0.95 to 0.75 yes/no when fillers appeared.
# 3. encoder: UMT + projector distilled onto the oracle tokens (actor slots weighted), no LLM
#    pass, 7x cheaper per step than training through the LLM; a per-clip probe also learns
#    which actors are on screen and which events happen (a red car parked, not only red).
# 4. video: everything together on pixels (LLM frozen for the first 100 steps).
# 5. explain: a quarter of the questions become alert reasons ("Does the video show X?
#    Explain briefly." -> "Yes, a red car parked."), the engine's explain call.
set -euo pipefail
cd "$(dirname "$0")/.."
FW=.venv/bin/flashwatch
OUT=${1:-models/tiny}
WORK=$(mktemp -d /tmp/fw-tiny.XXXX)
COMMON=(--focus --scenes 150 --threads "${THREADS:-2}")
$FW tiny train --out "$WORK/o1" --stage oracle --compact "${COMMON[@]}" --steps 1200 --seed 0 \
    --min-clips 1 --max-clips 4 --questions 16 --lr 1e-3 --warmup 50
$FW tiny train --out "$WORK/o2" --init "$WORK/o1" --stage oracle --compact "${COMMON[@]}" \
    --steps 950 --seed 1 --min-clips 1 --max-clips 4 --questions 16 --lr 5e-4 --warmup 20
$FW tiny train --out "$WORK/o3" --init "$WORK/o2" --stage oracle "${COMMON[@]}" \
    --steps 350 --seed 6 --min-clips 1 --max-clips 8 --questions 16 --lr 5e-4 --warmup 20
$FW tiny train --out "$WORK/e1" --init "$WORK/o3" --stage encoder "${COMMON[@]}" \
    --steps 5000 --seed 4 --min-clips 1 --max-clips 8 --questions 1 --lr 2e-3 --warmup 20 \
    --distill-weight 30
$FW tiny train --out "$WORK/v1" --init "$WORK/e1" --stage video "${COMMON[@]}" --steps 1000 \
    --seed 8 --min-clips 1 --max-clips 8 --questions 16 --lr 5e-4 --warmup 20 \
    --freeze-llm-steps 100 --distill-weight 30
$FW tiny train --out "$OUT" --init "$WORK/v1" --stage video "${COMMON[@]}" --steps 300 \
    --seed 9 --min-clips 1 --max-clips 8 --questions 16 --lr 1.5e-4 --warmup 20 \
    --distill-weight 30 --explain-share 0.25
rm -rf "$WORK"
$FW tiny eval --model "$OUT" --windows 60
