"""tbviz.cli.export: PNGs, GIFs and contact sheets from event files, with the documented layout."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from _cli_support import picture_png, write_log
from PIL import Image

from tbviz.cli import export
from tbviz.cli.export import CAPTION_HEIGHT, GAP, HEADER_HEIGHT, LABEL_WIDTH, MIN_FRAME_WIDTH

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)

LAYERS = {"conv": (30, 20), "outer/inner": (10, 12)}
STEPS = [0, 1, 2]


def colour(step: int, probe: int) -> tuple[int, int, int]:
    """The fill colour of `_cli_support.picture_png` for a step and probe."""
    return ((40 * step) % 256, (90 * probe) % 256, 128)


def close_to(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True))


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    write_log(tmp_path / "logs" / "activations", LAYERS, STEPS, probes=2)
    return tmp_path / "logs"


def export_all(logdir: Path, out: Path, **options) -> export.ExportSummary:
    (run,), problems = export.load_runs(str(logdir))
    assert problems == []
    return export.export_run(run, str(out / "activations"), **options)


def test_one_png_per_epoch_is_the_logged_picture_byte_for_byte(logdir, tmp_path):
    """Per-epoch PNGs land at <layer>/probe<i>/epoch<NNNN>.png (NNNN: the epoch as Keras prints
    it, step + 1) and equal the logged PNG."""
    summary = export_all(logdir, tmp_path / "out")
    for layer, (width, height) in LAYERS.items():
        for probe in range(2):
            for step in STEPS:
                path = (tmp_path / "out" / "activations" / export.safe_name(layer)
                        / f"probe{probe}" / f"epoch{step + 1:04d}.png")  # fmt: skip
                assert path.read_bytes() == picture_png(width, height, step, probe)
    assert len(summary.pngs) == len(LAYERS) * 2 * len(STEPS)
    assert (tmp_path / "out" / "activations" / "outer%2Finner" / "probe1" / "epoch0003.png").exists()


def test_gif_has_one_captioned_frame_per_epoch_in_order_with_documented_size(logdir, tmp_path):
    """A GIF has one frame per logged epoch, in step order, sized picture + caption strip."""
    export_all(logdir, tmp_path / "out")
    for layer, (width, height) in LAYERS.items():
        with Image.open(tmp_path / "out" / "activations" / export.safe_name(layer) / "probe1.gif") as gif:
            assert gif.n_frames == len(STEPS)
            frame_width = max(width, MIN_FRAME_WIDTH)
            assert gif.size == (frame_width, height + CAPTION_HEIGHT)
            captions = []
            for index, step in enumerate(STEPS):
                gif.seek(index)
                frame = np.asarray(gif.convert("RGB"))
                # The picture is centred at the top; its fill colour tells the epoch.
                left = (frame_width - width) // 2
                assert close_to(frame[height - 2, left + width - 2], colour(step, 1))
                captions.append(frame[height:].tobytes())
            assert len(set(captions)) == len(STEPS), "every frame has its own epoch caption"


def test_contact_sheets_have_documented_sizes_and_cells(logdir, tmp_path):
    """Layer sheets (columns = probes) and probe sheets (columns = layers) follow the layout."""
    export_all(logdir, tmp_path / "out")
    run_out = tmp_path / "out" / "activations"
    rows = len(STEPS)

    with Image.open(run_out / "conv" / "sheet.png") as sheet:
        width, height = LAYERS["conv"]
        assert sheet.size == (LABEL_WIDTH + 2 * width + 3 * GAP,
                              HEADER_HEIGHT + rows * height + (rows + 1) * GAP)  # fmt: skip
        pixels = np.asarray(sheet.convert("RGB"))
        for row, step in enumerate(STEPS):
            for probe in range(2):
                x = LABEL_WIDTH + GAP + probe * (width + GAP) + width - 2
                y = HEADER_HEIGHT + GAP + row * (height + GAP) + height - 2
                assert tuple(pixels[y, x]) == colour(step, probe)

    for probe in range(2):
        with Image.open(run_out / f"sheet_probe{probe}.png") as sheet:
            widths = [w for w, _ in LAYERS.values()]
            row_height = max(h for _, h in LAYERS.values())
            assert sheet.size == (LABEL_WIDTH + sum(widths) + (len(widths) + 1) * GAP,
                                  HEADER_HEIGHT + rows * row_height + (rows + 1) * GAP)  # fmt: skip
            pixels = np.asarray(sheet.convert("RGB"))
            x = LABEL_WIDTH + GAP + widths[0] + GAP + 8  # second column: outer/inner
            y = HEADER_HEIGHT + GAP + 2 * (row_height + GAP) + 10
            assert tuple(pixels[y, x]) == colour(2, probe)


def test_scale_enlarges_gifs_and_sheets_but_not_the_epoch_pngs(logdir, tmp_path):
    """--scale N multiplies GIF and sheet pictures by N; per-epoch PNGs stay as logged."""
    export_all(logdir, tmp_path / "out", scale=3)
    run_out = tmp_path / "out" / "activations"
    with Image.open(run_out / "conv" / "probe0.gif") as gif:
        assert gif.size == (90, 60 + CAPTION_HEIGHT)
    with Image.open(run_out / "conv" / "sheet.png") as sheet:
        assert sheet.size == (LABEL_WIDTH + 2 * 90 + 3 * GAP, HEADER_HEIGHT + 3 * 60 + 4 * GAP)
    with Image.open(run_out / "conv" / "probe0" / "epoch0001.png") as png:
        assert png.size == (30, 20)


def test_layers_come_in_model_order_and_filter_by_glob(tmp_path):
    """Layers keep the logged (model) order, and --layer globs select from them."""
    write_log(tmp_path / "activations", {"zeta": (4, 4), "alpha": (4, 4), "conv_b": (4, 4)}, [0])
    (run,), _ = export.load_runs(str(tmp_path))
    assert run.layers == ["zeta", "alpha", "conv_b"]
    assert export.select_layers(run, ["conv*", "zeta"]) == ["zeta", "conv_b"]
    with pytest.raises(export.ExportError) as caught:
        export.select_layers(run, ["dense*"])
    assert str(caught.value) == (
        "no layer matches --layer 'dense*'; layers in run 'activations': zeta, alpha, conv_b"
    )


def test_logs_with_metadata_on_the_first_event_only_export_every_epoch(tmp_path):
    """Logs whose writer kept a tag's metadata on its first event only (TF1) read fully."""
    write_log(tmp_path / "activations", {"conv": (8, 8)}, range(5), metadata_on_first_step_only=True)
    summary = export_all(tmp_path, tmp_path / "out")
    assert summary.steps == [0, 1, 2, 3, 4]
    with Image.open(tmp_path / "out" / "activations" / "conv" / "probe0.gif") as gif:
        assert gif.n_frames == 5


def test_truncated_event_file_exports_intact_epochs_and_names_the_file(tmp_path):
    """A file cut inside a record: earlier epochs export, the problem names file and byte."""
    path = write_log(tmp_path / "activations", {"conv": (16, 16)}, range(4))
    data = Path(path).read_bytes()
    cut = data.find(picture_png(16, 16, 3, 0)) + 10  # inside the last epoch's record
    Path(path).write_bytes(data[:cut])
    (run,), problems = export.load_runs(str(tmp_path))
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: ends inside a record at byte ")
    summary = export.export_run(run, str(tmp_path / "out"))
    assert summary.steps == [0, 1, 2]


def test_corrupted_record_is_skipped_and_later_epochs_still_export(tmp_path):
    """A record failing its checksum mid-file loses only that epoch, with a warning."""
    path = write_log(tmp_path / "activations", {"conv": (16, 16)}, range(5))
    data = bytearray(Path(path).read_bytes())
    middle = data.find(picture_png(16, 16, 2, 1)) + 40
    data[middle] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    (run,), problems = export.load_runs(str(tmp_path))
    assert len(problems) == 1 and "corrupted record" in problems[0] and path in problems[0]
    summary = export.export_run(run, str(tmp_path / "out"))
    assert summary.steps == [0, 1, 3, 4]
    with Image.open(tmp_path / "out" / "conv" / "probe0.gif") as gif:
        assert gif.n_frames == 4


def record_offsets(data: bytes) -> list[int]:
    """Where each TFRecord of an intact event file starts (length, CRC, data, CRC)."""
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += 12 + struct.unpack_from("<Q", data, offset)[0] + 4
    return offsets


def test_damaged_record_header_resumes_at_the_next_record(tmp_path):
    """A damaged length header skips to the next intact record instead of giving up."""
    path = write_log(tmp_path / "activations", {"conv": (16, 16)}, range(5))
    data = bytearray(Path(path).read_bytes())
    png = data.find(picture_png(16, 16, 1, 0))
    offsets = record_offsets(bytes(data))
    header = max(o for o in offsets if o < png)
    following = min(o for o in offsets if o > png)
    data[header] ^= 0x01  # the record's length no longer matches its checksum
    Path(path).write_bytes(bytes(data))
    (run,), problems = export.load_runs(str(tmp_path))
    assert problems == [
        f"{path}: damaged record header at byte {header}; skipped "
        f"{following - header} bytes up to byte {following}"
    ]
    assert [s.step for s in run.result.images["feature_maps/conv"]] == [0, 2, 3, 4]


def test_no_images_unknown_run_and_missing_logdir_are_export_errors(tmp_path):
    """Bad inputs raise ExportError saying what was expected and what there is."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(export.ExportError, match=r"no tbviz images in .*feature_maps/<layer>"):
        export.load_runs(str(tmp_path / "empty"))
    with pytest.raises(export.ExportError, match="no such directory"):
        export.load_runs(str(tmp_path / "missing"))
    write_log(tmp_path / "logs" / "activations", {"conv": (4, 4)}, [0])
    with pytest.raises(export.ExportError) as caught:
        export.load_runs(str(tmp_path / "logs"), "train")
    assert str(caught.value).endswith("runs with tbviz images: activations")


def test_runs_found_below_the_logdir_and_in_the_run_dir_itself(tmp_path):
    """LOGDIR may be a parent of several log dirs, or the run directory itself."""
    write_log(tmp_path / "a" / "activations", {"conv": (4, 4)}, [0])
    write_log(tmp_path / "b" / "activations", {"conv": (4, 4)}, [0, 1])
    runs, _ = export.load_runs(str(tmp_path))
    assert [r.name for r in runs] == ["a/activations", "b/activations"]
    (run,), _ = export.load_runs(str(tmp_path / "b" / "activations"))
    assert run.name == "."
    out = export.run_out_dir(str(tmp_path / "out"), run, str(tmp_path / "b" / "activations"))
    assert out == os.path.join(str(tmp_path / "out"), "activations")


def test_safe_name_keeps_each_layer_in_its_own_directory():
    """Layer paths map to distinct, harmless directory names."""
    assert export.safe_name("conv2d_1") == "conv2d_1"
    assert export.safe_name("backbone/block_1_relu") == "backbone%2Fblock_1_relu"
    assert export.safe_name("..") == "%2E."
    assert export.safe_name("a b") != export.safe_name("a_b")
    assert "/" not in export.safe_name("../../etc")


def test_check_writable_rejects_a_file_as_out(tmp_path):
    """An --out that cannot hold files is refused before anything is written."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(export.ExportError, match=r"cannot write to --out .*file"):
        export.check_writable(str(tmp_path / "file"))
    with pytest.raises(export.ExportError):
        export.check_writable(str(tmp_path / "file" / "sub"))
    export.check_writable(str(tmp_path / "new" / "dir"))
    assert os.listdir(tmp_path / "new" / "dir") == []


def test_captions_number_epochs_as_keras_prints_them():
    """A GIF frame and a contact sheet label step 0 "epoch 1", as Keras' "Epoch 1/N" (tags.epoch_number)."""
    from PIL import ImageDraw, ImageFont

    picture = Image.new("RGB", (80, 10), (0, 0, 0))
    frame = export.epoch_frame(picture, 0, (80, 10))
    expected = Image.new("RGB", (80, CAPTION_HEIGHT), (255, 255, 255))
    ImageDraw.Draw(expected).text((40, CAPTION_HEIGHT / 2), "epoch 1", fill=(0, 0, 0),
                                  font=ImageFont.load_default(), anchor="mm")  # fmt: skip
    assert np.array_equal(np.asarray(frame)[10:], np.asarray(expected))
    sheet = export.contact_sheet(["probe 0"], [0], lambda step, column: picture)
    label = Image.new("RGB", (LABEL_WIDTH, 10), (255, 255, 255))
    ImageDraw.Draw(label).text((LABEL_WIDTH - GAP, 5), "epoch 1", fill=(0, 0, 0),
                               font=ImageFont.load_default(), anchor="rm")  # fmt: skip
    top = HEADER_HEIGHT + GAP
    assert np.array_equal(np.asarray(sheet)[top : top + 10, :LABEL_WIDTH], np.asarray(label))
