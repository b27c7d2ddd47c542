"""The private label store as a worker finds it: checked, or fetched from the Hub once."""

from __future__ import annotations

import logging

from evaluation.bundle import LabelStore, PublicBundle, fetch_label_store
from evaluation.errors import EvaluationError
from settings import Settings

log = logging.getLogger("worker")


def check_label_store(settings: Settings) -> None:
    """Raise ``InvalidLabelStore`` when a label store is there but fails its check.

    No store is allowed: the worker then scores the public split only.
    """
    LabelStore.if_present(settings.labels_dir)


def fetch_labels(settings: Settings) -> None:
    """Fetch the label store from MITOSIS_LABELS_REPO once, when configured and not here yet.

    A failure is logged, not fatal: the worker still scores prediction files' public split
    and fails hidden-split jobs with the label store's own message.
    """
    if not settings.labels_repo:
        return
    try:
        public = PublicBundle(settings.public_dir) if settings.public_dir.is_dir() else None
        label_hash = fetch_label_store(
            settings.labels_repo,
            settings.labels_dir,
            token=settings.hf_token,
            expected_hash=settings.label_set_hash,
            manifest=public.manifest if public else None,
        )
        log.info("label store %s… (MITOSIS_LABELS_REPO %s)", label_hash[:16], settings.labels_repo)
    except (EvaluationError, OSError) as e:
        log.error("%s", e)
