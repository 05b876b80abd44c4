"""The training objective, re-exported for the training code: it lives in
:mod:`attriblm.models.loss`, beside the models (features and fine-tuning share it)."""

from attriblm.models.loss import (  # noqa: F401
    IGNORE_INDEX,
    model_per_example_loss,
    per_example_loss,
)

__all__ = ["IGNORE_INDEX", "model_per_example_loss", "per_example_loss"]
