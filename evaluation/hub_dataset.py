"""The public release as a Hugging Face dataset folder: parquet shards and a dataset card.

Written by ``python -m evaluation.release`` into ``<public bundle>/hf_dataset`` from the public
bundle alone (never from the label store), so it can hold no hidden label. Layout::

    README.md                                  dataset card: YAML configs, licence, counts
    data/train-00000-of-00001.parquet          AMi-Br train, labelled, with slides
    data/test-00000-of-00001.parquet           every test crop under its opaque id, no label
    amibr_test_labels/test-00000-of-00001.parquet   image_id,label of AMi-Br test (public)

The ``default`` config has one schema for both splits, as ``datasets`` requires: ``image``,
``image_id``, ``split``, ``slide``, ``label``. Train rows carry their slide and label; test rows
carry neither (null). The AMi-Br test labels are public and live in their own config, so a
user joins them on ``image_id`` deliberately. ``datasets.load_dataset(FOLDER)`` reads it offline
and gives the crops' PNG bytes unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from evaluation import bundle
from evaluation.splits import AMIBR_TEST, TEST_SPLITS, TRAIN_SPLIT
from settings import PUBLIC_RELEASE_COMMIT, PUBLIC_RELEASE_URL
from training import trainset

DATASET_DIR = "hf_dataset"
TRAIN_FILE = "data/train-00000-of-00001.parquet"  # read back by training.trainset's glob
TEST_FILE = "data/test-00000-of-00001.parquet"
TEST_LABELS_CONFIG = "amibr_test_labels"
TEST_LABELS_FILE = f"{TEST_LABELS_CONFIG}/test-00000-of-00001.parquet"
LABEL_FILES = bundle.LABEL_STORE_FILES


class HubPushError(RuntimeError):
    """The dataset cannot be published (offline, no token, or the Hub refused it)."""


def _features(with_image: bool = True):
    import datasets

    label = datasets.ClassLabel(names=list(trainset.CLASS_NAMES))
    if not with_image:
        return datasets.Features({"image_id": datasets.Value("string"), "label": label})
    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "split": datasets.Value("string"),
            "slide": datasets.Value("string"),
            "label": label,
        }
    )


def _write(rows: dict, features, path: Path) -> None:
    import datasets

    datasets.disable_progress_bars()  # a build log, not a terminal
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))


def _image(path: Path, name: str) -> dict:
    return {"bytes": path.read_bytes(), "path": name}


def write_dataset(public_dir: Path, out: Path) -> dict:
    """Write the dataset folder ``out`` from the public bundle at ``public_dir``.

    Returns:
        Rows per split, ``{"train": 2894, "test": 3679}`` for the full release.
    """
    public_dir, out = Path(public_dir), Path(out)
    train = trainset.read_train_labels(public_dir / bundle.TRAIN_DIR)
    crops = public_dir / bundle.TRAIN_DIR / trainset.CROPS_DIR
    _write(
        {
            "image": [_image(crops / name, name) for name in train["image"]],
            "image_id": list(train["image"]),
            "split": [TRAIN_SPLIT.name] * len(train),
            "slide": list(train["slide"]),
            "label": [trainset.CLASS_NAMES.index(label) for label in train["label"]],
        },
        _features(),
        out / TRAIN_FILE,
    )
    manifest = pd.read_csv(public_dir / bundle.MANIFEST_CSV, dtype=str, keep_default_na=False)
    test_crops = public_dir / bundle.TEST_CROPS_DIR
    _write(
        {
            "image": [_image(test_crops / f"{i}.png", f"{i}.png") for i in manifest["image_id"]],
            "image_id": list(manifest["image_id"]),
            "split": list(manifest["split"]),
            "slide": [None] * len(manifest),
            "label": [None] * len(manifest),
        },
        _features(),
        out / TEST_FILE,
    )
    public_labels = pd.read_csv(
        public_dir / bundle.AMIBR_TEST_LABELS_CSV, dtype=str, keep_default_na=False
    )
    _write(
        {
            "image_id": list(public_labels["image_id"]),
            "label": [trainset.CLASS_NAMES.index(label) for label in public_labels["label"]],
        },
        _features(with_image=False),
        out / TEST_LABELS_FILE,
    )
    counts = {
        "train": len(train),
        "train_atypical": int((train["label"] == trainset.CLASS_NAMES[1]).sum()),
        "test": len(manifest),
        **{split: int(n) for split, n in manifest["split"].value_counts().sort_index().items()},
        TEST_LABELS_CONFIG: len(public_labels),
    }
    (out / "README.md").write_text(dataset_card(counts))
    return {"train": counts["train"], "test": counts["test"]}


def dataset_card(counts: dict) -> str:
    """The dataset card: YAML front matter the Hub and ``datasets`` read, then the prose."""
    rows = counts["train"] + counts["test"]
    size = "n<1K" if rows < 1_000 else "1K<n<10K" if rows < 10_000 else "10K<n<100K"
    front = {
        "license": "mit",
        "task_categories": ["image-classification"],
        "tags": ["histopathology", "mitosis", "atypical-mitosis", "medical"],
        "pretty_name": "AMi-Br atypical mitosis benchmark (public half)",
        "size_categories": [size],
        "configs": [
            {
                "config_name": "default",
                "default": True,
                "data_files": [
                    {"split": "train", "path": trainset.DATASET_TRAIN_GLOB},
                    {"split": "test", "path": "data/test-*.parquet"},
                ],
            },
            {
                "config_name": TEST_LABELS_CONFIG,
                "data_files": [{"split": "test", "path": f"{TEST_LABELS_CONFIG}/test-*.parquet"}],
            },
        ],
    }
    splits = "\n".join(
        f"| {s.title} | test | {counts.get(s.name, 0):,} | "
        + ("public (`amibr_test_labels`)" if not s.hidden else "hidden (scored by the leaderboard)")
        + " |"
        for s in TEST_SPLITS
    )
    train_row = (
        f"| {TRAIN_SPLIT.title} | train | {counts['train']:,} | "
        f"`label` ({counts['train_atypical']:,} atypical), `slide` for grouped CV |"
    )
    return card(
        front,
        f"""# {front["pretty_name"]}

128×128 RGB crops of mitotic figures, each **atypical** or **normal**, from the benchmark of
Banerjee et al., *Benchmarking Deep Learning and Vision Foundation Models for Atypical vs.
Normal Mitosis Classification with Cross-Dataset Evaluation* (arXiv 2506.21444, MELBA 2026).
Built by `python -m evaluation.release` from the public release ({PUBLIC_RELEASE_URL}, commit
`{PUBLIC_RELEASE_COMMIT[:10]}`, MIT licence). Research use only, not for diagnosis.

| split | dataset split | rows | labels |
|---|---|---|---|
{train_row}
{splits}

```python
from datasets import load_dataset

crops = load_dataset("FOLDER_OR_REPO")                 # train + test, test without labels
public = load_dataset("FOLDER_OR_REPO", "{TEST_LABELS_CONFIG}", split="test")  # {AMIBR_TEST.title}
```

- `image`: the crop's PNG, byte for byte as released; `image_id`: the file name (train) or an
  opaque id that says nothing of the label (test); `split`: `{TRAIN_SPLIT.name}`,
  {", ".join(f"`{s.name}`" for s in TEST_SPLITS)}.
- `label` (`ClassLabel`: {", ".join(f"{i} = {n}" for i, n in enumerate(trainset.CLASS_NAMES))})
  and `slide` are null on every test row. The hidden splits' labels are not published: submit
  predictions for every test row to the leaderboard (CSV `image_id,prob_atypical`).
- Cross-validate by `slide` (5-fold `StratifiedGroupKFold`, the paper's protocol); the test
  sets are for the final model only.

## Citation

```bibtex
@article{{banerjee2025amibr,
  title   = {{Benchmarking Deep Learning and Vision Foundation Models for Atypical vs. Normal
             Mitosis Classification with Cross-Dataset Evaluation}},
  author  = {{Banerjee, Sweta and others}},
  journal = {{arXiv preprint arXiv:2506.21444}},
  year    = {{2025}}
}}
```
""",
    )


def card(front_matter: dict, body: str) -> str:
    """A dataset card: YAML front matter (what the Hub and ``datasets`` read), then Markdown."""
    return f"---\n{yaml.safe_dump(front_matter, sort_keys=False)}---\n\n{body}"


def push_to_hub(
    folder: Path,
    repo_id: str,
    token: str,
    *,
    private: bool = False,
    message: str = "AMi-Br benchmark: public release",
    allow_patterns: list[str] | None = None,
    delete_patterns: list[str] | None = None,
    api=None,
) -> str:
    """Publish a dataset folder as the Hub dataset ``repo_id``; returns the commit URL.

    ``api`` is an ``HfApi`` (the default builds one with ``token``). Offline, or without a token,
    it raises ``HubPushError`` before anything is sent.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubPushError(
            f"HF_HUB_OFFLINE is set: cannot publish to {repo_id}. Unset it, or upload the "
            f"folder {folder} by hand."
        )
    if not token:
        raise HubPushError(f"Publishing to {repo_id} needs a write token: set HF_TOKEN.")
    if not Path(folder).is_dir() or not any(Path(folder).iterdir()):
        raise HubPushError(f"Nothing to publish at {folder}: build the release first.")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # an existing repo keeps its visibility whatever create_repo was asked: check it
    if private and not api.repo_info(repo_id, repo_type="dataset").private:
        raise HubPushError(
            f"{repo_id} exists and is public; this upload goes only to a private repo. Make it "
            "private on the Hub, or name a new repo."
        )
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        commit_message=message,
        allow_patterns=allow_patterns,
        delete_patterns=delete_patterns,
    )
    return str(getattr(commit, "commit_url", commit))


def publish(
    public_dir: Path,
    labels_dir: Path,
    token: str,
    *,
    dataset_repo: str = "",
    labels_repo: str = "",
    private: bool = False,
):
    """Upload the release's dataset folder and/or its label store; yields a line per upload.

    The label store always goes to a private repo, and only its label files: a secret id key
    stays on this machine.
    """
    if labels_repo and labels_repo == dataset_repo:
        raise HubPushError(
            f"The label store and the public dataset cannot share the repo {labels_repo}."
        )
    uploads = [  # the release replaces its shards: older ones would be read with the new
        (dataset_repo, Path(public_dir) / DATASET_DIR, private, "release", None, ["*.parquet"]),
        (labels_repo, Path(labels_dir), True, "private label store", LABEL_FILES, None),
    ]
    for repo_id, folder, is_private, what, files, stale in uploads:
        if repo_id:
            url = push_to_hub(
                folder,
                repo_id,
                token,
                private=is_private,
                message=f"AMi-Br benchmark: {what}",
                allow_patterns=list(files) if files else None,
                delete_patterns=stale,
            )
            yield f"Published the {what}: {url}"
