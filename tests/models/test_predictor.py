from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models.errors import ImageError
from models.explain import grad_cam
from models.imaging import image_note, load_crop
from models.predict import main as predict_main
from models.predictor import Predictor, answer_text
from tests.conftest import stained_noise
from tests.models.conftest import nan_weights, tiny_checkpoint


@pytest.fixture(scope="module")
def crop(real_release) -> np.ndarray:
    path = sorted((real_release.public_dir / "amibr_train" / "crops").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def predictor(resnet_checkpoint) -> Predictor:
    return Predictor(resnet_checkpoint, device="cpu")


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **kwargs) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_every_format_reads_the_same_crop(predictor, crop):
    expected = predictor.predict_array(crop[None])[0]
    png, tiff, webp = (
        predictor.predict([encode(crop, f, **k)])[0].prob_atypical
        for f, k in (("PNG", {}), ("TIFF", {}), ("WEBP", {"lossless": True}))
    )
    assert png == pytest.approx(expected, abs=1e-6)
    assert tiff == pytest.approx(expected, abs=1e-6)
    assert webp == pytest.approx(expected, abs=1e-6)
    jpeg = predictor.predict([encode(crop, "JPEG", quality=95)])[0].prob_atypical
    assert jpeg == pytest.approx(expected, abs=0.05)  # lossy, but the same picture


def test_modes_are_converted_to_rgb(crop):
    rgba = np.dstack([crop, np.full(crop.shape[:2], 255, np.uint8)])
    assert np.array_equal(load_crop(encode(rgba, "PNG")), crop)
    transparent = rgba.copy()
    transparent[..., 3] = 0
    assert (load_crop(encode(transparent, "PNG")) == 255).all()  # composited on white
    grey = load_crop(encode(crop, "PNG", mode="L"))
    assert grey.shape == (128, 128, 3) and (grey[..., 0] == grey[..., 1]).all()
    sixteen = Image.fromarray(crop[..., 0].astype(np.uint16) * 257)
    buffer = io.BytesIO()
    sixteen.save(buffer, "PNG")
    assert load_crop(buffer.getvalue()).shape == (128, 128, 3)
    assert load_crop(encode(crop, "PNG", mode="P")).shape == (128, 128, 3)


def test_size_policy_resizes_squares_and_centre_crops_rectangles(crop):
    big = np.asarray(Image.fromarray(crop).resize((256, 256), Image.Resampling.NEAREST))
    assert np.abs(load_crop(big).astype(int) - crop.astype(int)).mean() < 8
    wide = np.zeros((128, 200, 3), np.uint8)
    wide[:, 36:164] = crop
    assert np.array_equal(load_crop(wide), crop)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"image_id,prob_atypical\n", "is not an image: it looks like text. Upload a PNG"),
        (b"PK\x03\x04" + bytes(40), "is not an image: it looks like a zip archive"),
        (b"", "is empty .0 bytes."),
        (
            _png_header_only(30000, 30000),
            "too large to decode safely .far over 50 megapixels: a decompression bomb",
        ),
        (_png_header_only(8000, 8000), "8000x8000 pixels, over the limit of 50 megapixels"),
        (encode(np.zeros((8, 8, 3), np.uint8), "PNG"), "8x8 pixels; crops must be at least 16 px"),
        (encode(np.zeros((64, 64, 3), np.uint8), "GIF"), "is a GIF file; PNG, JPEG, TIFF and WebP"),
    ],
)
def test_bad_inputs_get_clear_errors(data, message):
    with pytest.raises(ImageError, match=message):
        load_crop(data)


def test_truncated_file(crop):
    data = encode(crop, "PNG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_crop(data[: len(data) // 2])


def test_tta_is_invariant_to_rotations_and_flips(predictor, crop):
    views = [crop, np.rot90(crop), np.fliplr(crop), np.rot90(crop, 3)]
    probs = predictor.predict_array(np.stack(views), tta=True)
    assert np.allclose(probs, probs[0], atol=1e-5)
    assert not np.allclose(predictor.predict_array(np.stack(views)), probs[0], atol=1e-5)


def test_batching_does_not_change_answers(resnet_checkpoint, crop):
    crops = np.stack([crop, np.rot90(crop), np.flipud(crop)])
    one = Predictor(resnet_checkpoint, batch_size=1).predict_array(crops)
    many = Predictor(resnet_checkpoint, batch_size=64).predict_array(crops)
    assert np.allclose(one, many, atol=1e-6)
    answers = Predictor(resnet_checkpoint).predict([crop, crop])
    assert answers[0].label in ("atypical", "normal") and answers[0] == answers[1]


def test_images_are_decoded_a_chunk_at_a_time(predictor, crop, monkeypatch):
    monkeypatch.setattr("models.predictor.DECODE_CHUNK", 2)
    crops = [
        crop,
        np.rot90(crop),
        np.flipud(crop),
        np.fliplr(crop),
        np.transpose(crop, (1, 0, 2)).copy(),
    ]
    seen = []
    answers = predictor.predict(crops, progress=seen.append)
    whole = predictor.predict_array(np.stack(crops))
    assert seen == [2, 4, 5]
    assert np.allclose([a.prob_atypical for a in answers], whole, atol=1e-6)
    problems = [b"", *crops[:3], np.zeros((4, 4, 3), np.uint8)]
    with pytest.raises(ImageError) as error:  # the first chunk's failure still reads the rest
        predictor.predict(problems, progress=seen.append)
    assert str(error.value).startswith("2 of 5 images cannot be read:\n")
    assert "the image is empty" in str(error.value) and "4x4 pixels" in str(error.value)
    assert seen == [2, 4, 5]  # the network stopped at the first unreadable chunk
    with pytest.raises(TypeError, match=r"not one str: predict\(\[image\]\) or explain"):
        predictor.predict("crop.png")


@pytest.mark.parametrize(
    "name, members", [("resnet18_128", 1), ("vit_tiny_test", 1), ("resnet18_128", 2)]
)
def test_explanations(tmp_path, crop, name, members):
    predictor = Predictor(tiny_checkpoint(tmp_path / name, name, members))
    explanation = predictor.explain(crop)
    assert explanation.heatmap.shape == (128, 128)
    assert explanation.heatmap.min() >= 0 and explanation.heatmap.max() <= 1
    assert explanation.overlay.shape == (128, 128, 3) and explanation.overlay.dtype == np.uint8
    assert explanation.prediction == predictor.predict([crop])[0]


@pytest.mark.slow  # starts a process / builds every rejected archive
def test_predict_cli(resnet_checkpoint, crop, tmp_path, capsys):
    Image.fromarray(crop).save(tmp_path / "a.png")
    Image.fromarray(crop).save(tmp_path / "b.jpg", quality=95)
    (tmp_path / "c.png").write_bytes(b"not an image")
    good = subprocess.run(  # the entry point itself, once; the other cases call main()
        [
            sys.executable,
            "-m",
            "models.predict",
            "--checkpoint",
            str(resnet_checkpoint),
            "a.png",
            "b.jpg",
        ],
        cwd=tmp_path,  # the venv make builds has the repository on its path: any folder works
        capture_output=True,
        text=True,
    )
    lines = good.stdout.splitlines()
    assert good.returncode == 0 and lines[0] == "image,prob_atypical,label"
    assert lines[1].startswith("a.png,0.") and len(lines) == 3

    def run(*args) -> tuple[int, str, str]:
        code = predict_main(["--checkpoint", str(resnet_checkpoint), *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run(tmp_path / "a.png", tmp_path / "c.png")
    assert code == 2 and out == ""
    assert "c.png is not an image" in err and str(tmp_path) not in err
    code, out, err = run(tmp_path / "c.png", tmp_path / "a.png", tmp_path / "typo.png")
    assert code == 2 and out == ""  # every unreadable image named at once, none printed
    assert "2 of 3 images cannot be read" in err
    assert "c.png is not an image" in err and "typo.png cannot be read" in err
    crops = tmp_path / "test_crops"
    crops.mkdir()
    for name in ("00ab", "00aa"):
        Image.fromarray(crop).save(crops / f"{name}.png")
    (crops / "notes.txt").write_text("not a crop")
    code, out, _ = run("--format", "submission", crops)  # a folder: its images, in name order
    lines = out.splitlines()
    assert code == 0 and lines[0] == "image_id,prob_atypical,label"
    assert [line.split(",")[0] for line in lines[1:]] == ["00aa", "00ab"]
    assert lines[1].split(",")[1:] == good.stdout.splitlines()[1].split(",")[1:]
    unzipped = tmp_path / "unzipped"  # test_crops.zip unzipped into a folder of its own
    (unzipped / "test_crops").mkdir(parents=True)
    code, out, err = run("--format", "submission", unzipped)
    assert code == 2 and out == ""
    assert "no image files" in err and "test_crops/ subfolder" in err
    broken = nan_weights(tiny_checkpoint(tmp_path / "broken"))
    code = predict_main(["--checkpoint", str(broken), str(tmp_path / "a.png")])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "") and "no finite probability (NaN) for 1 of 1 images" in err
    code, out, err = run("--device", "tpu", tmp_path / "a.png")
    assert (code, out) == (2, "") and "Unknown device 'tpu': use auto, cpu, cuda" in err
    with pytest.raises(SystemExit):
        run("--batch-size", "0", tmp_path / "a.png")
    assert (
        "argument --batch-size: 0 is out of range: it must be at least 1" in capsys.readouterr().err
    )


def test_image_notes_and_answers_in_words(tmp_path):
    pink = (200, 120, 180)  # eosin-ish: a colour image
    Image.new("RGB", (128, 128), pink).save(tmp_path / "native.png")
    Image.new("RGB", (1024, 768), pink).save(tmp_path / "big.png")
    Image.new("RGB", (128, 200), pink).save(tmp_path / "tall.png")
    assert image_note(tmp_path / "native.png") == ""
    assert image_note(tmp_path / "big.png").startswith(
        "This image is 1024x768 px: the model took its centre 768x768 square and resized it "
        "to 128x128."
    )
    assert "took its centre 128x128 square." in image_note(tmp_path / "tall.png")
    assert "resized" not in image_note(tmp_path / "tall.png")
    stain = stained_noise()
    Image.fromarray(stain[..., 0]).save(tmp_path / "gray.png")  # mode L
    Image.fromarray(np.repeat(stain[..., :1], 3, axis=2)).save(tmp_path / "gray-rgb.png")
    see_through = np.dstack([stain, np.full((128, 128), 255, np.uint8)])
    Image.fromarray(see_through).save(tmp_path / "opaque.png")  # RGBA, every pixel opaque
    see_through[:10, :, 3] = 0
    Image.fromarray(see_through).save(tmp_path / "transparent.png")
    for gray in ("gray.png", "gray-rgb.png"):
        assert image_note(tmp_path / gray).startswith("This image has no colour: the model")
    assert image_note(tmp_path / "opaque.png") == ""
    assert image_note(tmp_path / "transparent.png") == (
        "Its transparent pixels were filled with white."
    )
    photos = Path(sklearn.datasets.__file__).parent / "images"  # scikit-learn's sample photos
    unlike = "Its colours are unlike an H&E stain ({}): the model learned from H&E-stained"
    assert unlike.format("46% of its pixels are green, yellow, cyan or light blue") in image_note(
        photos / "flower.jpg"
    )
    assert unlike.format("21% of its pixels are green, yellow, cyan or light blue") in image_note(
        photos / "china.jpg"
    )
    page = np.full((128, 128, 3), 250, np.uint8)  # a screenshot: white, gray text, one link
    page[20:30, 10:110], page[50:56, 10:60] = 60, (30, 90, 200)
    Image.fromarray(page).save(tmp_path / "page.png")
    assert image_note(tmp_path / "page.png") == (
        "Its colours are unlike an H&E stain (it is almost colourless): the model learned from "
        "H&E-stained crops of mitotic figures, so its answer on this image is unreliable."
    )
    assert "Called **normal**: below the cut-off of 0.5. A clear call" in answer_text(0.1)
    assert "A borderline call (0.02 from the cut-off)" in answer_text(0.52)
    assert "moderate" in answer_text(0.3) and "at or above" in answer_text(0.5)
    assert "**P(atypical) > 0.99**" in answer_text(0.997)  # not "1.00": no false certainty
    assert "**P(atypical) < 0.01**" in answer_text(0.001)
    assert "**P(atypical) = 0.99**" in answer_text(0.994)


class DarkSpotDetector(nn.Module):
    """A network whose evidence is known: its logit is the mean darkness of the green channel."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * F.avg_pool2d(F.relu(-x[:, 1:2]), 8)  # (N, 1, 16, 16): dark places

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return features.mean(dim=(2, 3)) - 0.05


def test_grad_cam_points_at_the_evidence():
    x = torch.zeros(2, 3, 128, 128)
    x[:, 1, 16:48, 80:112] = -2.0  # a dark blob, top right
    maps = grad_cam(DarkSpotDetector(), x, 128, np.array([True, False]))
    blob = np.zeros((128, 128), bool)
    blob[16:48, 80:112] = True
    atypical = maps[0]
    assert atypical[blob].mean() > 0.8 and atypical[~blob].mean() < 0.1
    assert blob[np.unravel_index(atypical.argmax(), atypical.shape)]
    assert maps[1].max() == 0  # called normal: the blob is evidence against, nothing for it


@pytest.mark.slow  # starts two CPU-bound processes for a few seconds
def test_the_efficiency_figure_holds_on_a_busy_machine(resnet_checkpoint, crop):
    predictor = Predictor(resnet_checkpoint)
    crops = np.stack([crop] * 4)
    threads = torch.get_num_threads()
    quiet = predictor.ms_per_crop(crops)
    assert torch.get_num_threads() == threads  # restored after the single-threaded passes
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count())
    ]
    try:
        loaded = predictor.ms_per_crop(crops)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert 0 < quiet and loaded < 1.6 * quiet, (quiet, loaded)  # wall time: several times more
