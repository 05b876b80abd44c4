"""Kronfluence as an external oracle for attriblm's EK-FAC (tests and benchmarks only).

Needs the optional ``oracle`` extra (``pip install --no-deps kronfluence einops einconv
opt_einsum``). Kronfluence is set up to compute what attriblm's ``ekfac`` computes:

* the same per-example loss (:func:`attriblm.models.loss.per_example_loss`, summed over the batch)
  as training loss (empirical Fisher, no label sampling) and as query measurement;
* the same tracked modules: every LoRA ``lora_A`` / ``lora_B`` linear;
* the same token set for the activation factor (its "attention mask" is
  :func:`attriblm.features.kfac.token_mask`);
* EK-FAC, float64 factors / eigendecomposition / preconditioning, an absolute damping, no
  low-rank query approximation.

Kronfluence wraps the modules of the model it is given: pass a copy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from attriblm.data.tokenize import EncodedExample, collate
from attriblm.features.kfac import token_mask
from attriblm.models.lora import lora_linears
from attriblm.models.loss import per_example_loss


def tracked_module_names(model: torch.nn.Module) -> list[str]:
    """Full ``named_modules`` names of the LoRA linears (attriblm's blocks), in block order."""
    ids = {id(module) for _, module in lora_linears(model)}
    return [name for name, module in model.named_modules() if id(module) in ids]


def kronfluence_ekfac_scores(
    model: torch.nn.Module,
    train: Sequence[EncodedExample],
    queries: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    damping: float,
    out_dir: Path | str,
    batch_size: int = 16,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Kronfluence EK-FAC pairwise scores ``[n_query, n_train]`` float64 and wall times.

    ``model`` is modified by Kronfluence (wrapped modules, frozen parameters). Times:
    ``factors`` (covariances, eigendecomposition, eigenvalue correction) and ``scores``.
    """
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    modules = tracked_module_names(model)

    class _LossTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            return per_example_loss(logits, batch["labels"]).sum()

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

        def get_influence_tracked_modules(self):
            return modules

        def get_attention_mask(self, batch):
            return token_mask(batch["labels"]).long()

    task = _LossTask()
    model = prepare_model(model, task)
    analyzer = Analyzer(
        analysis_name="attriblm-oracle",
        model=model,
        task=task,
        cpu=next(model.parameters()).device.type == "cpu",
        disable_tqdm=True,
        output_dir=str(out_dir),
        log_level=40,
    )
    loader = DataLoaderKwargs(collate_fn=lambda rows: collate(rows, pad_token_id))
    f64 = torch.float64
    factor_args = FactorArguments(
        strategy="ekfac",
        use_empirical_fisher=True,
        activation_covariance_dtype=f64,
        gradient_covariance_dtype=f64,
        eigendecomposition_dtype=f64,
        per_sample_gradient_dtype=f64,
        lambda_dtype=f64,
    )
    score_args = ScoreArguments(
        damping_factor=damping,
        query_gradient_low_rank=None,
        per_sample_gradient_dtype=f64,
        precondition_dtype=f64,
        score_dtype=f64,
    )
    times: dict[str, float] = {}
    start = time.perf_counter()
    analyzer.fit_all_factors(
        factors_name="ekfac",
        dataset=list(train),
        per_device_batch_size=batch_size,
        dataloader_kwargs=loader,
        factor_args=factor_args,
        overwrite_output_dir=True,
    )
    times["factors"] = time.perf_counter() - start
    start = time.perf_counter()
    analyzer.compute_pairwise_scores(
        scores_name="ekfac",
        factors_name="ekfac",
        query_dataset=list(queries),
        train_dataset=list(train),
        per_device_query_batch_size=batch_size,
        per_device_train_batch_size=batch_size,
        dataloader_kwargs=loader,
        score_args=score_args,
        overwrite_output_dir=True,
    )
    scores = analyzer.load_pairwise_scores("ekfac")["all_modules"]
    times["scores"] = time.perf_counter() - start
    return scores.double(), times


def mean_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows (queries) of the Spearman correlation of ``a[q]`` and ``b[q]``."""
    from scipy.stats import spearmanr

    rows = [spearmanr(x.numpy(), y.numpy()).statistic for x, y in zip(a, b, strict=True)]
    return float(sum(rows) / len(rows))
