#!/usr/bin/env bash
# The issue-6 checks that need a GPU, as one short script (a GPU session has ~15 min in all).
#
#   TOKENIZER=gpu-tokenizer bash benchmarks/gpu_check.sh OUT   # on the GPU machine, repo root
#   DEVICE=cpu SMALL=1 bash benchmarks/gpu_check.sh OUT         # dry run of every step on a CPU
#
# TOKENIZER: a folder with the default model's tokenizer files, so the data tokenise as in
# docs/PERFORMANCE.md (mean 68 tokens); without it the tiny test tokenizer is used (about twice
# as many tokens; max length 256). Before a GPU session, here (3.5 MB; an untracked folder that
# git does not ignore travels with the working tree):
#   mkdir -p gpu-tokenizer && cp ~/.cache/attriblm/models/smollm2-135m-instruct-0.1.2/{tokenizer.json,tokenizer_config.json,chat_template.jinja} gpu-tokenizer/
# The 1.1B model (4.4 GB) is built in a temporary folder, never under OUT, and removed at exit.
# Needs torch, transformers, peft, safetensors, scipy, typer, rich, pyyaml; attriblm is used from
# src/ (not installed), and nothing is downloaded. Steps:
#   1. a random-init Llama with TinyLlama-1.1B's shape and the tokenizer's vocabulary (speed
#      does not depend on the weights);
#   2. benchmarks/performance.py --skip memory on it, then its PERFORMANCE section into OUT;
#   3. a tiny-model fine-tune and attribute (5 methods) on DEVICE in fp32 and in bf16;
#   4. the same attribute under torchrun with NPROC processes (default 1), compared with step 3's
#      fp32. NCCL's collectives need NPROC ≥ 2 and one GPU per process (NCCL refuses two ranks
#      on one GPU); with NPROC=1 this checks the torchrun launch on CUDA only.
# OUT/gpu_check.json gathers the comparisons; each step's log is OUT/<step>.log.
set -euo pipefail
OUT=${1:?usage: gpu_check.sh OUT}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore
PY=${PYTHON:-python}

if [[ -n "${SMALL:-}" ]]; then
    SHAPE='{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}'
    PERF_ARGS=(--n-train 24 --n-query 8 --big-n-train 40 --big-n-query 10 --loop-rows 8 --repeats 1 --proj-dims 16)
else
    SHAPE='{"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632}'
    PERF_ARGS=()
fi
[[ -n "${TOKENIZER:-}" ]] || PERF_ARGS+=(--max-length 256)

step() { echo "== $1 ($(date +%T))"; }

MODEL=$(mktemp -d)
trap 'rm -rf "$MODEL"' EXIT

step "1 model"
$PY - "$MODEL" "$SHAPE" "${TOKENIZER:-}" > "$OUT/model.log" 2>&1 <<'EOF'
import json, sys
import torch
from transformers import AutoTokenizer, LlamaForCausalLM
from attriblm.models.tiny import build_tiny_tokenizer, tiny_config
out, shape, tokenizer_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else build_tiny_tokenizer()
config = tiny_config(tokenizer, **shape, initializer_range=0.02)
config._attn_implementation = "sdpa"
torch.manual_seed(0)
LlamaForCausalLM(config).save_pretrained(out)
tokenizer.save_pretrained(out)
print(config)
EOF

step "2 performance"
$PY benchmarks/performance.py --out "$OUT/perf" --model "$MODEL" --device "$DEVICE" \
    --skip memory "${PERF_ARGS[@]}" 2>&1 | tee "$OUT/performance.log"
cp docs/PERFORMANCE.md "$OUT/PERFORMANCE.md"
$PY benchmarks/write_performance_md.py --perf "$OUT/perf" --doc "$OUT/PERFORMANCE.md"

step "3 fine-tune and attribute, fp32 and bf16"
$PY - "$OUT/data" > "$OUT/data.log" 2>&1 <<'EOF'
import sys
from pathlib import Path
from attriblm.data.schema import FieldMap
from attriblm.data.tasks import build_task
from attriblm.data.writers import split_columns
from attriblm.io import write_jsonl
task = build_task("grammars", "demo")
for split in ("train", "test"):  # the study's field names, without the datasets package
    columns = split_columns(task[split], split, FieldMap())
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    write_jsonl(Path(sys.argv[1]) / f"{split}.jsonl", rows)
EOF
DATA=(--train "$OUT/data/train.jsonl" --queries "$OUT/data/test.jsonl")
METHODS=(-m gradsim -m datainf -m ekfac -m tracin -m repsim)
$PY -m attriblm finetune --model tiny --train "$OUT/data/train.jsonl" --out "$OUT/ft" \
    --epochs 2 --device "$DEVICE" --quiet > "$OUT/finetune.log" 2>&1
ATTR=(attribute --model tiny --adapter "$OUT/ft/adapter" "${DATA[@]}" "${METHODS[@]}"
      --device "$DEVICE" --quiet)
$PY -m attriblm "${ATTR[@]}" --out "$OUT/fp32" > "$OUT/fp32.log" 2>&1
$PY -m attriblm "${ATTR[@]}" --dtype bf16 --out "$OUT/bf16" > "$OUT/bf16.log" 2>&1

step "4 torchrun"
$PY -m torch.distributed.run --standalone --nproc-per-node="${NPROC:-1}" -m attriblm "${ATTR[@]}" \
    --out "$OUT/torchrun" > "$OUT/torchrun.log" 2>&1

$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
from scipy.stats import spearmanr
from attriblm.io import load_tensors, read_json
out = Path(sys.argv[1])
def scores(run):
    return {p.stem: load_tensors(p)["scores"] for p in sorted((out / run / "scores").glob("*.safetensors"))}
ref, bf16, multi = scores("fp32"), scores("bf16"), scores("torchrun")
def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
def spearman(a, b):
    return float(sum(spearmanr(x, y).statistic for x, y in zip(a, b)) / len(a))
report = {
    "model": read_json(out / "fp32" / "run.json").get("model"),
    "torchrun": read_json(out / "torchrun" / "run.json").get("distributed"),
    "torchrun_vs_fp32_rel_error": {m: rel(multi[m], ref[m]) for m in ref},
    "bf16_vs_fp32_spearman": {m: spearman(bf16[m], ref[m]) for m in ref},
    "performance": read_json(out / "perf" / "performance.json")["gradients"],
}
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
g = report["performance"]
print(json.dumps({k: v for k, v in report.items() if k != "performance"}, indent=1))
print(f"per-example {g['per_example_over_floor']:.3f}x floor; speed-up vs loop {g['speedup_vs_loop']:.2f}x")
EOF
step "done"
