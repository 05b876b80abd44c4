"""attriblm EK-FAC vs Kronfluence EK-FAC: wall time (factors + scores) and score agreement.

Setup: the grammars task (20 train / 2 test examples per rule → 200 train, 20 queries by
default), the model with a fresh LoRA adapter (r 4, alpha 32, q_proj / v_proj) whose B matrices
are set to seeded random values (0.01·N(0, 1)) so that every block has a gradient; no fine-tune.
Both libraries use the same per-example loss, tracked modules (all lora_A / lora_B linears),
token set, batch size and absolute damping λ = 0.1 · (mean squared train-gradient entry over all
blocks). Prints both times, their ratio and the mean per-query Spearman correlation.

Usage: python benchmarks/ekfac_vs_kronfluence.py [--model default] [--n-train 200]
[--n-query 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time

import torch

from attriblm.data.tasks import build_task
from attriblm.data.tokenize import encode_examples
from attriblm.features.gradients import per_example_gradients
from attriblm.features.kfac import KFACCollector
from attriblm.methods import Damping, FeatureSet, create_method
from attriblm.models.loading import load_model
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.oracle import kronfluence_ekfac_scores, mean_spearman


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-query", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    classes = 10
    splits = build_task(
        "grammars",
        n_train_per_class=-(-args.n_train // classes),
        n_test_per_class=-(-args.n_query // classes),
    )
    loaded = load_model(args.model, device=args.device)
    model = add_lora(loaded.model, LoraSettings(), seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in lora_linears(model):
            if name.endswith("lora_B"):
                noise = 0.01 * torch.randn(module.weight.shape, generator=gen)
                module.weight.copy_(noise.to(module.weight.device))
    model.eval()
    tok = loaded.tokenizer
    train = encode_examples(splits["train"][: args.n_train], tok)
    queries = encode_examples(splits["test"][: args.n_query], tok)
    pad, bs = tok.pad_token_id, args.batch_size
    kron_model = copy.deepcopy(model)

    start = time.perf_counter()
    with KFACCollector(model) as collector:
        g = per_example_gradients(
            model, train, pad_token_id=pad, batch_size=bs, on_batch=collector.set_batch
        )
        factors = collector.factors()
    lam = 0.1 * float(torch.cat([b.double().square().flatten() for b in g.values()]).mean())
    method = create_method("ekfac", damping=Damping("absolute", lam))
    train_fs = FeatureSet(grads=g, kfac=factors)
    fitted = method.fit(train_fs)  # eigendecomposition + eigenvalue correction: the factors
    t_factors = time.perf_counter() - start
    start = time.perf_counter()
    v = per_example_gradients(model, queries, pad_token_id=pad, batch_size=bs)
    ours = fitted.score(FeatureSet(grads=v)).scores.double()
    t_scores = time.perf_counter() - start
    ours_total = t_factors + t_scores

    import kronfluence

    print(f"model {args.model} · device {args.device} · torch threads {torch.get_num_threads()}")
    print(
        f"platform {platform.platform()} · torch {torch.__version__} · kronfluence "
        f"{kronfluence.__version__}"
    )
    print(
        f"train {len(train)} · queries {len(queries)} · blocks {len(g)} · "
        f"params {sum(b.shape[1] for b in g.values())} · batch {bs} · λ {lam:.3e} (absolute)"
    )
    print(
        f"attriblm    EK-FAC: factors {t_factors:8.2f} s · scores {t_scores:8.2f} s · "
        f"total {ours_total:8.2f} s",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        theirs, times = kronfluence_ekfac_scores(
            kron_model, train, queries, pad_token_id=pad, damping=lam, out_dir=tmp, batch_size=bs
        )
    kron_total = times["factors"] + times["scores"]
    print(
        f"kronfluence EK-FAC: factors {times['factors']:8.2f} s · scores "
        f"{times['scores']:8.2f} s · total {kron_total:8.2f} s"
    )
    print(f"time ratio attriblm / kronfluence: {ours_total / kron_total:.3f}")
    rel = float((ours - theirs).norm() / theirs.norm())
    print(
        f"mean per-query Spearman: {mean_spearman(ours, theirs):.6f} · relative difference "
        f"{rel:.2e}"
    )


if __name__ == "__main__":
    main()
