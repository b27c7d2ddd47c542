"""Dynamic batching: concurrent requests share forward passes.

Each request decodes and checks its own crop (so a bad file fails alone, with its own
message), then hands the crop to the :class:`Batcher` and waits. One thread runs the networks:
it takes every crop waiting at that moment (up to ``max_batch``), answers them in one forward
pass per model and kind of request (with or without TTA; explanations in one Grad-CAM pass),
and starts again; crops that arrive during a pass make up the next one. An idle batcher answers
a lone request at once: batching costs a single request nothing but a thread hand-off, and one
thread for all models keeps concurrent requests from fighting over the cores.

That thread should be the process's main thread (``python app.py`` serves the batcher there,
after starting the web server): on a CPU, PyTorch's intra-op threads run a small batch about
twice as fast when called from the main thread as from any other (measured on the 2-core
machine: 22 ms against 50-66 ms for one crop of the shipped model). Elsewhere (tests, a
notebook) the batcher starts a thread of its own on first use.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import torch

from models.predictor import Explanation, Prediction, Predictor

MAX_BATCH = 64
SMALL_PASS = 2  # images in a pass that one core answers faster than two


class Batcher:
    """One inference thread for every Predictor of the process, fed by many request threads."""

    def __init__(self, *, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self.threads = torch.get_num_threads()
        self._waiting: list[tuple[Predictor, np.ndarray, bool, bool, Future]] = []
        self._ready = threading.Condition()
        self._served = False

    def predict(self, predictor: Predictor, crop: np.ndarray, *, tta: bool = False) -> Prediction:
        """The answer for one decoded crop (128x128x3 uint8), computed with its neighbours."""
        return self._submit(predictor, crop, tta, explain=False).result()

    def predict_many(
        self, predictor: Predictor, crops: list[np.ndarray], *, tta: bool = False
    ) -> list[Prediction]:
        """Answers for many decoded crops, sharing passes with whatever else waits."""
        futures = [self._submit(predictor, crop, tta, explain=False) for crop in crops]
        return [future.result() for future in futures]

    def explain(self, predictor: Predictor, crop: np.ndarray, *, tta: bool = False) -> Explanation:
        """The answer and its Grad-CAM map for one decoded crop, with its neighbours."""
        return self._submit(predictor, crop, tta, explain=True).result()

    def _submit(self, predictor: Predictor, crop: np.ndarray, tta: bool, explain: bool) -> Future:
        future: Future = Future()
        with self._ready:
            if not self._served:
                self._served = True
                threading.Thread(target=self.serve, name="batcher", daemon=True).start()
            self._waiting.append((predictor, crop, tta, explain, future))
            self._ready.notify()
        return future

    def will_serve(self) -> None:
        """Promise that the calling code runs :meth:`serve` (no thread of the batcher's own)."""
        with self._ready:
            self._served = True

    def serve(self) -> None:
        """Answer waiting requests, forever, in the calling thread."""
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait(0.5)  # a timeout, so that signals reach the main thread
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
            groups: dict[tuple[int, bool, bool], list] = {}
            for item in batch:
                groups.setdefault((id(item[0]), item[2], item[3]), []).append(item)
            for items in groups.values():
                self._answer(items)

    def _answer(self, items: list) -> None:
        predictor, _, tta, explain, _ = items[0]
        crops = np.stack([item[1] for item in items])
        views = len(items) * (8 if tta else 1)
        # a crop or two: one core, the other left to the web server (intra-op threads that
        # wait for a core the server holds make a small pass slower, not faster)
        torch.set_num_threads(1 if views <= SMALL_PASS else self.threads)
        try:
            if explain:
                answers = predictor.explain_array(crops, tta=tta)
            else:
                answers = [predictor.answer(p) for p in predictor.predict_array(crops, tta=tta)]
        except Exception as e:  # noqa: BLE001 - handed to every request of the group
            for *_, future in items:
                future.set_exception(e)
            return
        for item, answer in zip(items, answers, strict=True):
            item[4].set_result(answer)


BATCHER = Batcher()  # the process's one inference thread
