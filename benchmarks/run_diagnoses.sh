#!/usr/bin/env bash
# Every `attriblm analyze` diagnosis on one model, sized for about an hour on 2 CPU cores with the
# default model (SmolLM2-135M-Instruct) when the counterfactual ran one seed per subset; its
# default of two seeds (SEEDS) doubles that step's retrainings (not re-timed). Writes OUT/<diagnosis>/ (JSON, PNG, config.yaml), the
# task data and fine-tune it uses, and OUT/timings.json (wall seconds per step).
#
#   benchmarks/run_diagnoses.sh OUT            # default model
#   MODEL=tiny N_SUBSETS=3 EPOCH_VALUES=0,1 SUBSET_EPOCHS=2 benchmarks/run_diagnoses.sh OUT
#                                               # smoke run of the same commands (tests)
# A rerun into the same OUT skips the steps already done (OUT/.done/<step>).
#
# Recipe: the bench's quick recipe (3 epochs, lr 1e-3, batch 8, LoRA r=4 on q_proj,v_proj,
# response-token loss), not the study's; the epoch sweep and subset retraining set their own
# epochs (shown in each command). docs/RESULTS.md says so beside each figure.
set -euo pipefail

OUT=${1:?usage: benchmarks/run_diagnoses.sh OUT}
MODEL=${MODEL:-default}
ATTRIBLM=${ATTRIBLM:-attriblm}
N_SUBSETS=${N_SUBSETS:-20}            # counterfactual subsets
SEEDS=${SEEDS:-2}                     # counterfactual retrainings per subset (>= 2)
EPOCH_VALUES=${EPOCH_VALUES:-0,1,3,6,10}  # delta-theta-epochs sweep
SUBSET_EPOCHS=${SUBSET_EPOCHS:-10}     # subset-retrain fine-tunes
RECIPE=(--epochs 3 --lr 1e-3 --max-length 128 --seed 42 --loss-mask response)
# shellcheck source=benchmarks/steps.sh
source "$(dirname "${BASH_SOURCE[0]}")/steps.sh"

for task in harmful-s grammars; do
  [ -f "$OUT/data/$task/train.jsonl" ] ||
    step "build-$task" "$ATTRIBLM" build "$task" --preset quick --seed 42 --out "$OUT/data/$task"
done
HARMFUL_TRAIN="$OUT/data/harmful-s:train"
HARMFUL_TEST="$OUT/data/harmful-s:test"

step finetune-harmful-s "$ATTRIBLM" finetune --model "$MODEL" --train "$HARMFUL_TRAIN" \
  --out "$OUT/finetune-harmful-s" "${RECIPE[@]}" --batch-size 8 --quiet

# the simulation, plus the same error on the fine-tuned model's query gradients
step theorem1 "$ATTRIBLM" analyze theorem1 --model "$MODEL" \
  --adapter "$OUT/finetune-harmful-s/adapter" --train "$HARMFUL_TRAIN" --queries "$HARMFUL_TEST" \
  --loss-mask response --out "$OUT/theorem1" --quiet

step ihvp-error "$ATTRIBLM" analyze ihvp-error --model "$MODEL" \
  --adapter "$OUT/finetune-harmful-s/adapter" --train "$HARMFUL_TRAIN" --queries "$HARMFUL_TEST" \
  --loss-mask response --out "$OUT/ihvp-error" --quiet

step convergence "$ATTRIBLM" analyze convergence --model "$MODEL" \
  --finetune "$OUT/finetune-harmful-s" --train "$HARMFUL_TRAIN" --queries "$HARMFUL_TEST" \
  --loss-mask response --out "$OUT/convergence" --quiet

step delta-theta "$ATTRIBLM" analyze delta-theta --model "$MODEL" --task backdoor-1 \
  --preset quick --vary poison --values 0,0.05,0.1,0.25,0.5 "${RECIPE[@]}" \
  --train-batch-size 8 --out "$OUT/delta-theta" --quiet

# at 3 epochs the trigger does not take yet (measured); the epoch sweep shows when it does
step delta-theta-epochs "$ATTRIBLM" analyze delta-theta --model "$MODEL" --task backdoor-1 \
  --preset quick --vary epochs --values "$EPOCH_VALUES" --lr 1e-3 --max-length 128 --seed 42 \
  --loss-mask response --train-batch-size 8 --out "$OUT/delta-theta-epochs" --quiet

# 10 epochs (the study's count): at 3 a 12-16-row subset learns nothing (measured: accuracy 0)
step subset-retrain "$ATTRIBLM" analyze subset-retrain --model "$MODEL" \
  --train "$OUT/data/grammars:train" --queries "$OUT/data/grammars:test" --epochs "$SUBSET_EPOCHS" --lr 1e-3 \
  --max-length 128 --seed 42 --loss-mask response --train-batch-size 8 --k 1 \
  --out "$OUT/subset-retrain" --quiet

step counterfactual "$ATTRIBLM" analyze counterfactual --model "$MODEL" \
  --train "$HARMFUL_TRAIN" --queries "$HARMFUL_TEST" "${RECIPE[@]}" --train-batch-size 8 \
  --n-subsets "$N_SUBSETS" --seeds "$SEEDS" --fraction 0.5 --out "$OUT/counterfactual" --quiet

python3 -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; \
json.dump({r['step']: r['seconds'] for r in rows}, open(sys.argv[2], 'w'), indent=1)" \
  "$TIMINGS" "$OUT/timings.json"
echo "done: $OUT" >&2
