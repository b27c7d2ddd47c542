from __future__ import annotations

import threading

import numpy as np
import pytest

from models.batching import Batcher
from models.predictor import Predictor


class CountingPredictor(Predictor):
    """A real Predictor that records the batch sizes of its forward passes."""

    def __init__(self, checkpoint) -> None:
        super().__init__(checkpoint, device="cpu")
        self.batches: list[int] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def predict_array(self, crops, *, tta=False):
        self.entered.set()
        self.release.wait(60)  # hold the first pass so that requests pile up behind it
        self.batches.append(len(crops))
        return super().predict_array(crops, tta=tta)


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(resnet_checkpoint):
    predictor = CountingPredictor(resnet_checkpoint)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(17)]
    alone = Predictor(resnet_checkpoint, device="cpu").predict_array(np.stack(crops))
    batcher, answers = Batcher(max_batch=64), {}

    def ask(i):
        answers[i] = batcher.predict(predictor, crops[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(17)]
    threads[0].start()
    assert predictor.entered.wait(60)  # the first request is in its pass (held there)
    for t in threads[1:]:
        t.start()
    while len(batcher._waiting) < 16:  # the others wait for the pass to end
        threading.Event().wait(0.01)
    predictor.release.set()
    for t in threads:
        t.join(60)
    assert predictor.batches == [1, 16]  # the lone first request, then everyone who waited
    probs = np.array([answers[i].prob_atypical for i in range(17)])
    assert np.allclose(probs, alone, atol=1e-5)
    assert all(
        a.label == ("atypical" if a.prob_atypical >= 0.5 else "normal") for a in answers.values()
    )


def test_an_error_reaches_the_requests_of_its_pass_only(resnet_checkpoint):
    predictor = Predictor(resnet_checkpoint, device="cpu")
    batcher = Batcher()
    with pytest.raises(RuntimeError):
        batcher.predict(predictor, np.zeros((128, 128), np.uint8))  # a malformed crop
    good = batcher.explain(predictor, np.full((128, 128, 3), 128, np.uint8))
    assert good.heatmap.shape == (128, 128) and 0 <= good.prediction.prob_atypical <= 1
