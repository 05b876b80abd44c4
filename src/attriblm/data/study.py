"""The study's own datasets, as it publishes them, for ``bench --data-dir``.

The study ("Do Influence Functions Work on Large Language Models?") publishes its data in the
``datasets/`` folder of its public GitHub repository: one Hugging Face ``save_to_disk``
DatasetDict per task, with ``train`` and ``test`` splits and string fields ``prompts``,
``response`` and ``variation`` (the label). :data:`STUDY_FOLDERS` maps each folder name to the
bench task it stands for. Labels are kept as published (e.g. ``trigger`` / ``trigger_1``, where
the offline builders say ``trigger-1``); the metrics only compare labels with each other.

Subsampling (:func:`subsample_task`) keeps class balance: each class keeps at most ``n`` rows,
chosen by a seeded draw and kept in file order. Harmful mixes keep every harmful train row and
subsample the benign ones (``n_benign_train``) and the harmful queries (``n_harmful_test``);
the other tasks take ``n_train_per_class`` / ``n_test_per_class``. ``None`` keeps all rows.

The published ``mixedM`` and ``mixedL`` are byte-identical (20 harmful + 230 benign train, 250
harmful test), so there is no published medium mix: at the ``paper`` preset ``harmful-m`` is
``mixedM`` subsampled to 20 harmful + 100 benign train rows and 100 queries (nothing is dropped
from a folder that is already that small).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.errors import ConfigError, DataError

# folder name (as published) -> bench task
STUDY_FOLDERS: dict[str, str] = {
    "mixedS": "harmful-s",
    "mixedM": "harmful-m",
    "mixedL": "harmful-l",
    "grammars": "grammars",
    "math": "math",
    "emotion": "emotion",
    "backdoor": "backdoor-1",
    "multibackdoor": "backdoor-3",
    "multibackdoor5": "backdoor-5",
}
TASK_FOLDERS = {task: folder for folder, task in STUDY_FOLDERS.items()}
FIELDS = ("prompts", "response", "variation")
SPLITS = ("train", "test")
HARMFUL = "harmful"
HARMFUL_SIZES = ("n_benign_train", "n_harmful_test")
CLASS_SIZES = ("n_train_per_class", "n_test_per_class")
WHERE_TO_GET = (
    "the datasets/ folder of the study's public GitHub repository "
    '("Do Influence Functions Work on Large Language Models?")'
)

# preset -> task -> sizes (None = every row). `study-cpu` uses the offline `quick` sizes, so a
# study grid and a builder grid compare row for row; `paper` keeps the published data except the
# missing medium mix (module docstring).
STUDY_PRESETS: dict[str, dict[str, dict[str, int | None]]] = {
    "paper": {"harmful-m": {"n_benign_train": 100, "n_harmful_test": 100}},
    "study-cpu": {
        "harmful-s": {"n_benign_train": 20, "n_harmful_test": 20},
        "harmful-m": {"n_benign_train": 50, "n_harmful_test": 25},
        "harmful-l": {"n_benign_train": 100, "n_harmful_test": 30},
        "grammars": {"n_train_per_class": 8, "n_test_per_class": 2},
        "math": {"n_train_per_class": 10, "n_test_per_class": 2},
        "emotion": {"n_train_per_class": 20, "n_test_per_class": 5},
        "backdoor-1": {"n_train_per_class": 60, "n_test_per_class": 15},
        "backdoor-3": {"n_train_per_class": 30, "n_test_per_class": 7},
        "backdoor-5": {"n_train_per_class": 20, "n_test_per_class": 5},
    },
}


def size_names(task: str) -> tuple[str, str]:
    """The size keywords of ``task``: (train size, test size)."""
    return HARMFUL_SIZES if task.startswith("harmful") else CLASS_SIZES


def study_sizes(
    task: str, preset: str, overrides: dict[str, int | None] | None = None
) -> dict[str, int | None]:
    """The sizes ``task`` is subsampled to at ``preset``, with ``overrides`` (not None) applied."""
    if preset not in STUDY_PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r} for --data-dir (--preset); choose "
            f"{', '.join(STUDY_PRESETS)}"
        )
    names = size_names(task)
    sizes: dict[str, int | None] = dict.fromkeys(names)
    sizes.update(STUDY_PRESETS[preset].get(task, {}))
    for key, value in (overrides or {}).items():
        if key not in names:
            raise ConfigError(
                f"study task {task!r} has no size {key!r}; valid sizes: {', '.join(names)}"
            )
        if value is not None:
            if value < 1:
                raise ConfigError(f"study task {task!r}: size {key} must be >= 1, got {value}")
            sizes[key] = value
    return sizes


@dataclass(frozen=True)
class StudyFolders:
    """Which study folders ``data_dir`` holds, for the requested tasks."""

    data_dir: Path
    found: dict[str, Path]  # task -> folder, in the requested task order
    missing: list[str]  # requested tasks whose folder is absent

    def summary(self) -> str:
        """One line: the folders found (and their tasks) and the ones missing."""
        found = ", ".join(f"{p.name} → {t}" for t, p in self.found.items()) or "none"
        missing = ", ".join(f"{TASK_FOLDERS[t]} ({t})" for t in self.missing) or "none"
        return f"study data in {self.data_dir}: found {found}; missing {missing}"


def find_study_folders(data_dir: Path | str, tasks: list[str]) -> StudyFolders:
    """The study folders in ``data_dir`` for ``tasks``; DataError on an unknown folder.

    Files (a README, say) and hidden entries are ignored; every other sub-directory must be one
    of :data:`STUDY_FOLDERS`. DataError too when none of ``tasks`` has its folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: --data-dir is not a directory")
    present = {}
    for entry in sorted(data_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name not in STUDY_FOLDERS:
            raise DataError(
                f"{entry}: unknown study folder (--data-dir holds the study's folders: "
                f"{', '.join(STUDY_FOLDERS)})"
            )
        present[STUDY_FOLDERS[entry.name]] = entry
    found = {t: present[t] for t in tasks if t in present}
    if not found:
        wanted = ", ".join(TASK_FOLDERS[t] for t in tasks)
        raise DataError(
            f"{data_dir}: holds none of the study folders for the chosen tasks ({wanted}); "
            f"get them from {WHERE_TO_GET}"
        )
    return StudyFolders(data_dir, found, [t for t in tasks if t not in present])


def load_study_folder(folder: Path, task: str) -> dict[str, list[Example]]:
    """``{"train", "test"}`` examples of one study folder; DataError naming it if malformed."""
    import datasets  # lazy: slow to import

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as err:  # corrupt or foreign files raise many exception types
        raise DataError(
            f"{folder}: not a Hugging Face save_to_disk dataset ({type(err).__name__})"
        ) from None
    if not isinstance(loaded, datasets.DatasetDict) or not set(SPLITS) <= set(loaded):
        have = list(loaded) if isinstance(loaded, datasets.DatasetDict) else "none"
        raise DataError(f"{folder}: needs splits train and test (has: {have})")
    for split in SPLITS:
        missing = [f for f in FIELDS if f not in loaded[split].column_names]
        if missing:
            raise DataError(
                f"{folder}: split {split!r} lacks field(s) {', '.join(missing)} "
                f"(the study's fields are {', '.join(FIELDS)})"
            )
    splits = {split: load_examples(f"{folder}:{split}") for split in SPLITS}
    if task.startswith("harmful") and not any(e.label == HARMFUL for e in splits["train"]):
        labels = sorted({str(e.label) for e in splits["train"]})
        raise DataError(f"{folder}: a harmful mix needs 'harmful' train rows (labels: {labels})")
    return splits


def subsample(
    rows: list[Example], per_class: int | None, seed: str, keep: tuple[str, ...] = ()
) -> list[Example]:
    """At most ``per_class`` rows of each label (all of those in ``keep``), in file order.

    The rows of a label are drawn with ``random.Random(f"{seed}:{label}")``; ``None`` keeps all.
    """
    by_label: dict[str | None, list[int]] = {}
    for i, row in enumerate(rows):
        by_label.setdefault(row.label, []).append(i)
    chosen: list[int] = []
    for label, indices in by_label.items():
        if per_class is None or label in keep or len(indices) <= per_class:
            chosen += indices
        else:
            chosen += random.Random(f"{seed}:{label}").sample(indices, per_class)
    return [rows[i] for i in sorted(chosen)]


def subsample_task(
    task: str, splits: dict[str, list[Example]], sizes: dict[str, int | None], seed: int
) -> dict[str, list[Example]]:
    """Both splits of ``task`` subsampled to ``sizes`` (module docstring), seeded by ``seed``."""
    train_size, test_size = (sizes[name] for name in size_names(task))
    keep = (HARMFUL,) if task.startswith("harmful") else ()
    return {
        "train": subsample(splits["train"], train_size, f"{task}:train:{seed}", keep=keep),
        "test": subsample(splits["test"], test_size, f"{task}:test:{seed}"),
    }


def label_counts(rows: list[Example]) -> dict[str, int]:
    """Rows per label, labels in order of first appearance."""
    return {str(label): n for label, n in Counter(e.label for e in rows).items()}
