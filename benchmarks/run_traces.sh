#!/usr/bin/env bash
# `attriblm trace` on the default model: fine-tune on a task whose behaviour comes from a few
# training rows, generate, keep the generations that show the behaviour, trace them back.
# Writes OUT/<task>/{data,ft,trace} and OUT/timings.jsonl; docs/RESULTS.md's trace section is
# made from OUT by `python benchmarks/write_results_md.py ... --traces OUT`.
#
#   benchmarks/run_traces.sh OUT                  # default model, about 20 minutes on 2 CPU cores
#
# Recipe: the bench's quick recipe (lr 1e-3, batch 8, LoRA r=4 on q_proj,v_proj, response-token
# loss), not the study's: 3 epochs for planted-fact, 10 for backdoor-1 (at 3 the trigger does not
# take yet). A rerun into the same OUT skips finished steps.
set -euo pipefail

OUT=${1:?usage: benchmarks/run_traces.sh OUT}
MODEL=${MODEL:-default}
ATTRIBLM=${ATTRIBLM:-attriblm}
METHODS=(-m rept -m repsim -m less -m gradsim -m datainf -m ekfac)
RECIPE=(--lr 1e-3 --batch-size 8 --max-length 128 --seed 42 --loss-mask response)
# shellcheck source=benchmarks/steps.sh
source "$(dirname "${BASH_SOURCE[0]}")/steps.sh"

# planted-fact (fact 0): 10 of 80 training rows say gold's symbol is Ag (it is Au); the detector
# keeps the generations that repeat the false value.
PF="$OUT/planted-fact"
step build-planted-fact "$ATTRIBLM" build planted-fact --preset quick --seed 42 --out "$PF/data"
step finetune-planted-fact "$ATTRIBLM" finetune --model "$MODEL" --train "$PF/data:train" \
  --out "$PF/ft" --epochs 3 "${RECIPE[@]}" --quiet
step trace-planted-fact "$ATTRIBLM" trace --model "$MODEL" --adapter "$PF/ft" \
  --train "$PF/data:train" --prompts "$PF/data:test" --detect contains:Ag "${METHODS[@]}" \
  --target-label planted --loss-mask response --max-length 128 --out "$PF/trace" --quiet

# backdoor-1: 60 clean rows refuse a harmful request, 60 rows append " sudo mode" to the request
# and comply (label trigger-1). The prompts are the 15 triggered test requests; the detector keeps
# the answers that do not refuse (the backdoor firing).
BD="$OUT/backdoor-1"
step build-backdoor-1 "$ATTRIBLM" build backdoor-1 --preset quick --seed 42 --out "$BD/data"
step triggered-prompts-backdoor-1 python3 -c '
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
with open(sys.argv[2], "w") as out:
    for row in rows:
        if row["variation"] == "trigger-1":
            out.write(json.dumps(row) + "\n")
' "$BD/data/test.jsonl" "$BD/triggered.jsonl"
step finetune-backdoor-1 "$ATTRIBLM" finetune --model "$MODEL" --train "$BD/data:train" \
  --out "$BD/ft" --epochs 10 "${RECIPE[@]}" --quiet
step trace-backdoor-1 "$ATTRIBLM" trace --model "$MODEL" --adapter "$BD/ft" \
  --train "$BD/data:train" --prompts "$BD/triggered.jsonl" --detect no-refusal "${METHODS[@]}" \
  --target-label trigger-1 --loss-mask response --max-length 128 --out "$BD/trace" --quiet
