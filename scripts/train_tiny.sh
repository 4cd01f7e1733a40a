#!/usr/bin/env bash
# Train the tiny synthetic-world model (models/tiny) on a CPU, seeded, in five stages.
# Budgets are fixed step counts, so a rerun on the same thread count does the same work
# (about 41 minutes on 2 cores; BENCHMARKS.md "Tiny model, stop 22" has the stage times
# and what the model reached; on a slower day, stop 27, the same steps took 1.35x as long).
# THREADS=1 halves the cores used and takes longer. Questions include hard negatives (an
# actor on screen that does not do the event) from the first stage on, and a quarter of
# "did X happen" questions ask about an event the window shows (`--event-yes 0.25`: rare
# events such as loitering get positives); scenes alternate between 160x120 and 320x240
# cameras.
#
# 1. oracle: the LLM (256 wide; 128 never learned the matching) learns to read "visual
#    tokens" built from the ground truth (the sum of its own word embeddings per actor),
#    without pixels; actor slots only (--compact), mostly presence and "did X happen"
#    questions (--focus). See reasoner/tiny/oracle.py for why.
# 2. oracle again at half the learning rate, then with the filler tokens a real clip has
#    (64 per clip) for 1,050 steps: the LLM the encoder distils onto sets the encoder's
#    ceiling (700 steps read ground truth at 92.7%, 1,050 at 95.4%: BENCHMARKS, stop 20).
# 3. encoder: UMT + projector distilled onto the oracle tokens (actor slots weighted), no LLM
#    pass, 7x cheaper per step than training through the LLM; a per-clip probe also learns
#    which actors are on screen and which events happen, per-patch labels which actor is
#    where (--token-weight), and a fifth of windows hold their actors still (--still-share)
#    so that "standing" is learnt from motion, not from which actor it is.
# 4. video: everything together on pixels (LLM frozen for the first 100 steps), with a
#    quarter of the questions asking for alert reasons ("Does the video show X? Explain
#    briefly." -> "Yes, a red car parked.", the engine's explain call); each question weighs
#    the same in the loss (--per-question-loss), so the long reasons do not crowd out the
#    yes/no answers.
set -euo pipefail
cd "$(dirname "$0")/.."
FW=.venv/bin/flashwatch
OUT=${1:-models/tiny}
WORK=$(mktemp -d /tmp/fw-tiny.XXXX)
COMMON=(--focus --scenes 150 --threads "${THREADS:-2}" --event-yes 0.25)
$FW tiny train --out "$WORK/o1" --stage oracle --compact "${COMMON[@]}" --steps 900 --seed 0 \
    --min-clips 1 --max-clips 4 --questions 16 --lr 1e-3 --warmup 50 --tome-groups 2
$FW tiny train --out "$WORK/o2" --init "$WORK/o1" --stage oracle --compact "${COMMON[@]}" \
    --steps 700 --seed 1 --min-clips 1 --max-clips 4 --questions 16 --lr 5e-4 --warmup 20
$FW tiny train --out "$WORK/o3" --init "$WORK/o2" --stage oracle "${COMMON[@]}" \
    --steps 1050 --seed 6 --min-clips 1 --max-clips 8 --questions 16 --lr 5e-4 --warmup 20
$FW tiny train --out "$WORK/e1" --init "$WORK/o3" --stage encoder "${COMMON[@]}" \
    --steps 3500 --seed 4 --min-clips 1 --max-clips 8 --questions 1 --lr 2e-3 --warmup 20 \
    --distill-weight 30 --still-share 0.2 --token-weight 1
$FW tiny train --out "$OUT" --init "$WORK/e1" --stage video "${COMMON[@]}" --steps 850 \
    --seed 8 --min-clips 1 --max-clips 8 --questions 16 --lr 5e-4 --warmup 20 \
    --freeze-llm-steps 100 --distill-weight 30 --token-weight 1 --explain-share 0.25 \
    --per-question-loss
rm -rf "$WORK"
$FW tiny eval --model "$OUT" --windows 60
