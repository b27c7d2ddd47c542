"""The one Predictor: checkpoint in, P(atypical), decision and explanation out.

Device ``auto`` picks CUDA (bf16 autocast) when present, else the CPU (fp32). Test-time
augmentation averages P(atypical) over the 8 dihedral transforms of each crop.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.checkpoint import Checkpoint, load_checkpoint
from models.errors import ImageError
from models.explain import grad_cam, overlay
from models.imaging import ImageInput, load_crop
from models.inference import probabilities, resolve_device, run_batches
from models.preprocess import normalise, prepare
from settings import Settings


@dataclass(frozen=True)
class Prediction:
    """One crop's answer."""

    prob_atypical: float
    label: str


@dataclass(frozen=True)
class Explanation:
    """A crop's answer with where the model looked."""

    prediction: Prediction
    crop: np.ndarray  # (128, 128, 3) uint8, what the model saw
    heatmap: np.ndarray  # (128, 128) float in [0, 1]
    overlay: np.ndarray  # (128, 128, 3) uint8


CPU_BATCH, GPU_BATCH = 64, 512
DECODE_CHUNK = 1024  # crops decoded at a time: 48 MB, whatever the number of images
MAX_LISTED = 20  # unreadable images named in one error


class Predictor:
    """Runs a checkpoint (by default the shipped model) on crops."""

    def __init__(
        self,
        checkpoint: Checkpoint | str | Path | None = None,
        *,
        device: str = "auto",
        batch_size: int | None = None,
    ) -> None:
        if checkpoint is None:  # the shipped model, or MITOSIS_DEFAULT_CHECKPOINT
            checkpoint = Settings.from_env().default_checkpoint
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = load_checkpoint(Path(checkpoint))
        self.device = resolve_device(device)
        self.checkpoint = checkpoint
        self.model = checkpoint.model.to(self.device).eval()
        if self.device.type == "cuda":  # cuDNN's fastest convolutions want NHWC
            self.model = self.model.to(memory_format=torch.channels_last)
        # a GPU takes big batches (halved on running out of memory); a CPU, cache-sized ones
        self.batch_size = batch_size or (GPU_BATCH if self.device.type == "cuda" else CPU_BATCH)

    @property
    def threshold(self) -> float:
        """P(atypical) at or above which a crop is called atypical."""
        return self.checkpoint.threshold

    def answer(self, prob: float) -> Prediction:
        """The Prediction for a probability: the decision at the checkpoint's threshold."""
        prob = float(prob)
        return Prediction(prob, "atypical" if prob >= self.threshold else "normal")

    def _inputs(self, crops: torch.Tensor) -> torch.Tensor:
        x = prepare(crops.to(self.device), self.checkpoint.input_size)
        return normalise(x, self.checkpoint.mean, self.checkpoint.std)

    def predict_array(self, crops: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """P(atypical) of uint8 crops (N, H, W, 3)."""
        tensor = torch.from_numpy(np.array(crops, dtype=np.uint8)).permute(0, 3, 1, 2)
        while True:
            try:
                probs = run_batches(
                    probabilities(self.model, views=8 if tta else 1),
                    tensor,
                    size=self.checkpoint.input_size,
                    mean=self.checkpoint.mean,
                    std=self.checkpoint.std,
                    device=self.device,
                    batch_size=self.batch_size,
                )
                break
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()
        return probs.numpy().astype(np.float64)

    @property
    def parameters(self) -> int:
        """The number of parameters of the network (every member of an ensemble)."""
        return sum(p.numel() for p in self.model.parameters())

    def ms_per_crop(self, crops: np.ndarray, *, repeats: int = 3) -> float:
        """Milliseconds of compute per crop of a forward pass over ``crops`` (N, H, W, 3).

        Comparable whatever else the machine runs: on the CPU it is the CPU time of one thread
        (the network runs single-threaded while measured), which a busy machine does not
        inflate (a ResNet-18 at 128 px: 7.1 ms quiet, 7.0 ms beside two CPU-bound processes on
        2 cores, where two threads' wall time went from 4.1 to 15.1 ms); on a GPU the wall
        time. The median of ``repeats`` after one warm-up: the leaderboard's efficiency figure.
        """
        on_cpu = self.device.type == "cpu"
        clock = time.thread_time if on_cpu else time.perf_counter
        threads = torch.get_num_threads()
        if on_cpu:
            torch.set_num_threads(1)
        try:
            self.predict_array(crops)
            times = []
            for _ in range(repeats):
                start = clock()
                self.predict_array(crops)
                times.append(clock() - start)
        finally:
            torch.set_num_threads(threads)
        return 1000 * statistics.median(times) / len(crops)

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        tta: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[Prediction]:
        """Answers for images of any accepted kind (see ``models.imaging``), in their order.

        Images are decoded ``DECODE_CHUNK`` at a time, so memory stays flat for any number of
        them; ``progress`` hears how many are answered after each chunk. An image that cannot
        be read stops the network, not the reading: the error names every unreadable image.
        """
        if isinstance(images, (str, Path, bytes)):  # a str is a Sequence: of its characters
            raise TypeError(
                f"predict takes a list of images, not one {type(images).__name__}: "
                "predict([image]) or explain(image)."
            )
        answers: list[Prediction] = []
        problems: list[str] = []
        for start in range(0, len(images), DECODE_CHUNK):
            crops = []
            for image in images[start : start + DECODE_CHUNK]:
                try:
                    crops.append(load_crop(image))
                except ImageError as e:
                    problems.append(str(e))
            if problems:
                continue
            answers += [self.answer(p) for p in self.predict_array(np.stack(crops), tta=tta)]
            if progress:
                progress(len(answers))
        if len(problems) == 1:
            raise ImageError(problems[0])
        if problems:
            shown = "\n".join(f"  {problem}" for problem in problems[:MAX_LISTED])
            more = len(problems) - MAX_LISTED
            raise ImageError(
                f"{len(problems):,} of {len(images):,} images cannot be read:\n{shown}"
                + (f"\n  and {more:,} more." if more > 0 else "")
            )
        return answers

    def explain(self, image: ImageInput, *, tta: bool = False) -> Explanation:
        """The answer for one image and its Grad-CAM map (taken on the untransformed crop)."""
        return self.explain_array(load_crop(image)[None], tta=tta)[0]

    def explain_array(self, crops: np.ndarray, *, tta: bool = False) -> list[Explanation]:
        """Answers and Grad-CAM maps of uint8 crops (N, H, W, 3), in one backward pass."""
        probs = self.predict_array(crops, tta=tta)
        x = self._inputs(torch.from_numpy(np.array(crops, dtype=np.uint8)).permute(0, 3, 1, 2))
        maps = grad_cam(self.model, x, crops.shape[1], probs >= self.threshold)
        return [
            Explanation(self.answer(p), crop, heatmap, overlay(crop, heatmap))
            for p, crop, heatmap in zip(probs, crops, maps, strict=True)
        ]


def answer_text(prob_atypical: float, threshold: float = 0.5) -> str:
    """One answer in words: what the probability means, the call, and how sure it is.

    Example:
        >>> answer_text(0.93).split(". ")[1]
        'Called **atypical**: at or above the cut-off of 0.5'
    """
    call = "atypical" if prob_atypical >= threshold else "normal"
    side = "at or above" if call == "atypical" else "below"
    distance = abs(prob_atypical - threshold)
    sure = "clear" if distance >= 0.3 else "moderate" if distance >= 0.15 else "borderline"
    # two decimals, but never a certainty the model did not state (0.997 is not 1.00)
    shown = (
        "< 0.01"
        if prob_atypical < 0.005
        else "> 0.99"
        if prob_atypical >= 0.995
        else f"= {prob_atypical:.2f}"
    )
    return (
        f"**P(atypical) {shown}**: the model's probability that this mitotic "
        f"figure is atypical. Called **{call}**: {side} the cut-off of {threshold}. "
        f"A {sure} call ({distance:.2f} from the cut-off); borderline calls are where "
        "pathologists disagree most. Research use only, not for diagnosis."
    )


def predictions_table(names: Sequence[str], predictions: Sequence[Prediction]) -> pd.DataFrame:
    """``image,prob_atypical,label``: what ``models.predict`` prints and the Space offers."""
    return pd.DataFrame(
        {
            "image": list(names),
            "prob_atypical": [round(p.prob_atypical, 6) for p in predictions],
            "label": [p.label for p in predictions],
        }
    )


@functools.lru_cache(maxsize=3)
def load_predictor(checkpoint: str, device: str = "auto") -> Predictor:
    """A Predictor per checkpoint path, kept for reuse (the app's model choices)."""
    return Predictor(checkpoint, device=device)
