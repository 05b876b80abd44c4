"""Measured speed and memory of attriblm's feature pipeline against the hardware floor.

    python benchmarks/performance.py --out perf                  # default model, this machine
    python benchmarks/performance.py --out perf --device cuda    # unchanged on a GPU
    python benchmarks/write_performance_md.py --perf perf        # → docs/PERFORMANCE.md

Writes ``OUT/performance.json`` (every figure, the machine, the settings) and prints a summary.
Data: the ``math`` task (paper-size builder, 100 rows per class: 1000 train, 100 queries; mean
~65 tokens, cap ``--max-length``). Model: ``--model`` with a fresh LoRA adapter (r=4 on
q_proj,v_proj) whose ``B`` matrices are set to seeded random values, so every block has a
non-zero gradient; the timings do not depend on the values.

Stages (each timed with the device synchronised):

Timings of the floor, per-example and loop stages are the minimum over ``--repeats``
interleaved runs (floor, per-example, floor, per-example, ...).

* ``floor``: one batched forward + backward (``torch.autograd.grad`` of the summed loss over the
  LoRA parameters, logits at every position as a trainer computes them) per batch over the
  first ``--n-train`` + ``--n-query`` rows; ``floor_selected``: the same pass with the output
  layer evaluated only at the loss positions (:func:`attriblm.train.loss.model_per_example_loss`,
  the pass attriblm's per-example gradients ride on).
* ``per_example``: attriblm's batched per-example gradients over the same rows and batches.
* ``loop``: a batch-size-1 autograd loop (forward, ``autograd.grad``, flatten, one example at a
  time, full logits — the study's way) over the first ``--loop-rows`` rows, and attriblm on the
  same rows; ``loop_selected``: that loop with the output layer at the loss positions only, so
  ``loop_selected / attriblm`` is the speed-up from batching alone.
* ``scoring``: gradsim, datainf, lissa-paper, exact on ``--big-n-train`` × ``--big-n-query``
  gradients (the second half of the rows is computed here and timed too), as a share of the
  time to compute those gradients.
* ``repsim``: representations of the ``--n-train`` + ``--n-query`` prompts plus RepSim scoring,
  against one fine-tuning epoch over the ``--n-train`` rows (the study's batch size 24).
* ``projection``: gradsim on projected blocks (``--proj-dims``, Gaussian, seed 0) and on bf16- and
  fp16-stored gradients (the store's encoding) vs the exact gradsim scores: mean per-query
  Spearman and top-10 overlap.
* ``memory``: in a fresh process, a feature store of ``--mem-rows`` simulated rows × ``--mem-dim``
  dims (4 blocks) is written; in another, gradsim and datainf are streamed from it against
  ``--mem-queries`` queries; its peak resident memory (``ru_maxrss``) and the store size on disk
  are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

STAGES = ("gradients", "memory-write", "memory-score")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn):
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - start


def _machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _model(args):
    from attriblm.models.loading import load_model
    from attriblm.models.lora import LoraSettings, add_lora

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    loaded.model = add_lora(loaded.model, LoraSettings(dropout=0.0), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    loaded.model.eval()
    return loaded


def _data(args, tokenizer):
    from attriblm.data.tasks import build_task
    from attriblm.data.tokenize import encode_examples, encode_prompts

    per_class_train = -(-args.big_n_train // 10)  # the math task has 10 classes
    per_class_test = -(-args.big_n_query // 10)
    task = build_task(
        "math", "paper", n_train_per_class=per_class_train, n_test_per_class=per_class_test
    )
    train, queries = task["train"][: args.big_n_train], task["test"][: args.big_n_query]
    opts = {"template": "llama2", "loss_mask": "response", "max_length": args.max_length}
    enc_train = encode_examples(train, tokenizer, **opts)
    enc_query = encode_examples(queries, tokenizer, **opts)
    prompts = encode_prompts(
        train[: args.n_train] + queries[: args.n_query],
        tokenizer,
        template="llama2",
        max_length=args.max_length,
    )
    return train, enc_train, enc_query, prompts


def _losses(model, batch: dict, selected: bool) -> torch.Tensor:
    """Per-example losses from full logits (a trainer's pass) or at the loss positions only."""
    from attriblm.train.loss import model_per_example_loss, per_example_loss

    if selected:
        return model_per_example_loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return per_example_loss(logits, batch["labels"])


def _floor(model, encoded, pad_id: int, batch_size: int, device, selected: bool = False) -> None:
    from attriblm.data.tokenize import collate

    params = [p for p in model.parameters() if p.requires_grad]
    for start in range(0, len(encoded), batch_size):
        batch = {
            k: v.to(device) for k, v in collate(encoded[start : start + batch_size], pad_id).items()
        }
        torch.autograd.grad(_losses(model, batch, selected).sum(), params)


def _loop(model, encoded, pad_id: int, device, selected: bool = False) -> list[torch.Tensor]:
    from attriblm.data.tokenize import collate

    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for item in encoded:
        batch = {k: v.to(device) for k, v in collate([item], pad_id).items()}
        grads = torch.autograd.grad(_losses(model, batch, selected).sum(), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).cpu())
    return rows


def _interleaved(device, repeats: int, stages: dict, result: dict) -> dict:
    """Time each stage once per repeat, in turn (interleaved: run-to-run drift hits all alike).

    Writes ``result[f"{name}_runs_s"]`` (every run) and ``result[f"{name}_s"]`` (their minimum);
    returns each stage's last return value.
    """
    runs: dict[str, list[float]] = {name: [] for name in stages}
    last: dict = {}
    for _ in range(repeats):
        for name, fn in stages.items():
            last[name], seconds = _timed(device, fn)
            runs[name].append(seconds)
    for name, times in runs.items():
        result[f"{name}_s"], result[f"{name}_runs_s"] = min(times), times
    return last


def _spearman_rows(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(sum(spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)) / len(a))


def _topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    from attriblm.metrics.ranking import rank_train  # the metrics' ranking, ties included

    ta, tb = rank_train(a)[:, :k], rank_train(b)[:, :k]
    shared = [len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(ta, tb, strict=True)]
    return sum(shared) / len(shared)


def stage_gradients(args) -> dict:
    from attriblm.features.gradients import per_example_gradients
    from attriblm.features.projection import Projection
    from attriblm.features.representations import representations
    from attriblm.features.row_codec import decode_rows, encode_rows
    from attriblm.methods.base import FeatureSet
    from attriblm.methods.registry import create_method

    loaded = _model(args)
    model, tokenizer = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    train, enc_train, enc_query, prompts = _data(args, tokenizer)
    first = enc_train[: args.n_train] + enc_query[: args.n_query]
    second = enc_train[args.n_train :] + enc_query[args.n_query :]
    bs = args.batch_size
    result: dict = {
        "rows": len(first),
        "mean_tokens": sum(len(e.input_ids) for e in first) / len(first),
    }

    def per_example(rows):
        return per_example_gradients(model, rows, pad_token_id=pad_id, batch_size=bs)

    per_example(first[:bs])  # warm-up (allocator, kernels), not timed
    _floor(model, first[:bs], pad_id, bs, device)
    _floor(model, first[:bs], pad_id, bs, device, selected=True)
    # interleaved repeats, minimum of each: run-to-run noise on a shared CPU is ~10 %
    last = _interleaved(
        device,
        args.repeats,
        {
            "floor": lambda: _floor(model, first, pad_id, bs, device),
            "floor_selected": lambda: _floor(model, first, pad_id, bs, device, selected=True),
            "per_example": lambda: per_example(first),
        },
        result,
    )
    grads_first = last["per_example"]
    result["per_example_over_floor"] = result["per_example_s"] / result["floor_s"]
    result["per_example_over_selected_floor"] = result["per_example_s"] / result["floor_selected_s"]
    print(
        f"floor {result['floor_s']:.1f} s · floor at loss positions "
        f"{result['floor_selected_s']:.1f} s · per-example {result['per_example_s']:.1f} s "
        f"({result['per_example_over_floor']:.3f}× floor, "
        f"{result['per_example_over_selected_floor']:.3f}× the loss-position floor)",
        flush=True,
    )

    loop_rows = first[: args.loop_rows]
    last = _interleaved(
        device,
        args.repeats,
        {
            "loop": lambda: _loop(model, loop_rows, pad_id, device),
            "loop_selected": lambda: _loop(model, loop_rows, pad_id, device, selected=True),
            "loop_attriblm": lambda: per_example(loop_rows),
        },
        result,
    )
    loop_grads, batched = last["loop"], last["loop_attriblm"]
    result["loop_rows"] = len(loop_rows)
    result["speedup_vs_loop"] = result["loop_s"] / result["loop_attriblm_s"]
    result["speedup_from_batching"] = result["loop_selected_s"] / result["loop_attriblm_s"]
    flat = torch.cat([g for g in batched.values()], dim=1)
    reference = torch.stack(loop_grads)
    result["loop_max_rel_diff"] = float((flat - reference).abs().max() / reference.abs().max())
    print(
        f"batch-size-1 loop {result['loop_s']:.1f} s vs attriblm {result['loop_attriblm_s']:.1f} s "
        f"on {len(loop_rows)} rows: {result['speedup_vs_loop']:.2f}× (batching alone, vs a loop "
        f"at loss positions {result['loop_selected_s']:.1f} s: "
        f"{result['speedup_from_batching']:.2f}×)",
        flush=True,
    )

    grads_second, result["second_half_s"] = _timed(device, lambda: per_example(second))
    result["big_gradients_s"] = result["per_example_s"] + result["second_half_s"]
    n_tr = args.n_train
    train_g = {
        b: torch.cat([grads_first[b][:n_tr], grads_second[b][: len(enc_train) - n_tr]])
        for b in grads_first
    }
    query_g = {
        b: torch.cat([grads_first[b][n_tr:], grads_second[b][len(enc_train) - n_tr :]])
        for b in grads_first
    }
    result["big_shape"] = [len(enc_query), len(enc_train)]
    scoring = {}
    full_scores = None
    for name in ("gradsim", "datainf", "lissa-paper", "exact"):
        method = create_method(name)
        out, seconds = _timed(
            torch.device("cpu"),
            lambda method=method: method.score(
                FeatureSet(grads=train_g), FeatureSet(grads=query_g)
            ),
        )
        scoring[name] = {
            "seconds": seconds,
            "share_of_gradients": seconds / result["big_gradients_s"],
        }
        if name == "gradsim":
            full_scores = out.scores
        print(
            f"scoring {name}: {seconds:.2f} s ({100 * scoring[name]['share_of_gradients']:.2f} % "
            "of gradient time)",
            flush=True,
        )
    result["scoring"] = scoring

    projection = {}
    for dim in args.proj_dims:
        proj = Projection(dim=dim, kind="gaussian", seed=0)
        ptrain = {b: proj.apply(b, g) for b, g in train_g.items()}
        pquery = {b: proj.apply(b, g) for b, g in query_g.items()}
        scores = create_method("gradsim").score(FeatureSet(grads=ptrain), FeatureSet(grads=pquery))
        projection[f"gaussian-{dim}"] = {
            "stored_dims": sum(g.shape[1] for g in ptrain.values()),
            "spearman": _spearman_rows(scores.scores, full_scores),
            "top10_overlap": _topk_overlap(scores.scores, full_scores),
        }
    for dtype in ("bf16", "fp16"):  # the store's own encoding (fp16: row-scaled)
        stored = {b: decode_rows(*encode_rows(g, dtype)) for b, g in train_g.items()}
        stored_q = {b: decode_rows(*encode_rows(g, dtype)) for b, g in query_g.items()}
        scores = create_method("gradsim").score(
            FeatureSet(grads=stored), FeatureSet(grads=stored_q)
        )
        projection[f"{dtype}-store"] = {
            "stored_dims": sum(g.shape[1] for g in train_g.values()),
            "spearman": _spearman_rows(scores.scores, full_scores),
            "top10_overlap": _topk_overlap(scores.scores, full_scores),
        }
    result["full_dims"] = sum(g.shape[1] for g in train_g.values())
    result["projection"] = projection
    for key, row in projection.items():
        print(f"{key}: Spearman {row['spearman']:.4f} · top-10 overlap {row['top10_overlap']:.3f}")

    def repsim_run():
        reprs = representations(model, prompts, pad_token_id=pad_id, batch_size=bs)
        return create_method("repsim").score(
            FeatureSet(reprs=reprs[: args.n_train]), FeatureSet(reprs=reprs[args.n_train :])
        )

    _, result["repsim_s"] = _timed(device, repsim_run)
    result["epoch_s"] = _one_epoch(args, train[: args.n_train])
    result["repsim_over_epoch"] = result["repsim_s"] / result["epoch_s"]
    print(
        f"repsim {result['repsim_s']:.1f} s vs one epoch {result['epoch_s']:.1f} s: "
        f"{result['repsim_over_epoch']:.3f}×",
        flush=True,
    )
    return result


def _one_epoch(args, train) -> float:
    import tempfile

    from attriblm.models.loading import load_model
    from attriblm.train.finetune import TrainSettings, finetune

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    with tempfile.TemporaryDirectory() as out:
        finetune(loaded, train, TrainSettings(epochs=1, max_length=args.max_length), out)
        log = json.loads((Path(out) / "train_log.json").read_text())
    return float(log["epochs"][0]["wall_s"])


def stage_memory_write(args) -> dict:
    from attriblm.features.store import FeatureStore

    widths = [args.mem_dim // 4] * 4
    result = {}
    for dtype in ("fp32", "bf16", "fp16"):
        root = Path(args.out) / f"memory-store-{dtype}"
        shutil.rmtree(root, ignore_errors=True)
        store = FeatureStore(root, {"simulated": True}, dtype=dtype)
        store.begin("grads:train", n_rows=args.mem_rows)
        generator = torch.Generator().manual_seed(0)
        start_time = time.perf_counter()
        for start in range(0, args.mem_rows, args.mem_shard):
            stop = min(start + args.mem_shard, args.mem_rows)
            rows = {
                f"block-{i}": torch.randn(stop - start, w, generator=generator)
                for i, w in enumerate(widths)
            }
            store.write("grads:train", start, stop, rows)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        result[dtype] = {"bytes": size, "write_s": time.perf_counter() - start_time}
        print(
            f"store {dtype}: {size / 2**30:.2f} GiB in {result[dtype]['write_s']:.1f} s", flush=True
        )
        if dtype != "fp32":
            shutil.rmtree(root)  # only its size is reported; scoring reads the fp32 store
    return result


def stage_memory_score(args) -> dict:
    from attriblm.features.store import FeatureStore
    from attriblm.methods.streaming import stream_datainf, stream_gradsim

    store = FeatureStore(
        Path(args.out) / "memory-store-fp32", {"simulated": True}, if_mismatch="error"
    )
    generator = torch.Generator().manual_seed(1)
    queries = {
        b: torch.randn(args.mem_queries, w, generator=generator)
        for b, w in store.blocks("grads:train").items()
    }
    result = {}
    for name, fn in (("gradsim", stream_gradsim), ("datainf", stream_datainf)):
        start = time.perf_counter()
        scores = fn(store, "grads:train", queries)
        result[name] = {"seconds": time.perf_counter() - start, "shape": list(scores.shape)}
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"streamed scoring peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    return result


def _child(args, stage: str) -> dict:
    """Run one stage in a fresh interpreter (its peak memory is its own) and read its JSON."""
    out = Path(args.out) / f"{stage}.json"
    command = [sys.executable, __file__, "--stage", stage, *sys.argv[1:]]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-query", type=int, default=50)
    parser.add_argument("--big-n-train", type=int, default=1000)
    parser.add_argument("--big-n-query", type=int, default=100)
    parser.add_argument("--loop-rows", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved timing repeats (min)")
    parser.add_argument("--proj-dims", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--mem-rows", type=int, default=100_000)
    parser.add_argument("--mem-dim", type=int, default=8192)
    parser.add_argument("--mem-queries", type=int, default=100)
    parser.add_argument("--mem-shard", type=int, default=1000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["gradients", "memory"])
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage is not None:
        fn = {
            "gradients": stage_gradients,
            "memory-write": stage_memory_write,
            "memory-score": stage_memory_score,
        }[args.stage]
        (out / f"{args.stage}.json").write_text(json.dumps(fn(args), indent=1))
        return
    from attriblm.models.loading import resolve_device

    started = time.perf_counter()
    report = {
        "command": "python benchmarks/performance.py " + " ".join(sys.argv[1:]),
        "machine": _machine(resolve_device(args.device)),
        "settings": {k: v for k, v in vars(args).items() if k not in ("stage", "out")},
    }
    previous = out / "performance.json"
    if previous.exists():  # keep the stages a --skip leaves out
        report = {**json.loads(previous.read_text()), **report}
    if "gradients" not in args.skip:
        report["gradients"] = _child(args, "gradients")
    if "memory" not in args.skip:
        report["memory"] = {
            "write": _child(args, "memory-write"),
            "score": _child(args, "memory-score"),
        }
        shutil.rmtree(out / "memory-store-fp32", ignore_errors=True)
    report["wall_s"] = time.perf_counter() - started
    tmp = out / ".performance.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, previous)
    print(f"wrote {previous}")


if __name__ == "__main__":
    main()
