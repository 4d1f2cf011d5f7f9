"""The viewer on the real RG1 chest CR (1955 x 1841, 15 bits, MONOCHROME1), offscreen."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication
from ui_support import qimage_to_array

from pneumoview.dicom.display import load_display_image, render
from pneumoview.ui.viewer import PREVIEW_MAX, ImageViewer, ViewCache, brightness_presets, downsample, prepare_view

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def viewer(qtbot, rg1_uncompressed: Path) -> ImageViewer:  # noqa: ANN001
    v = ImageViewer()
    qtbot.addWidget(v)
    v.resize(800, 700)
    v.show()
    with qtbot.waitSignal(v.imageLoaded, timeout=60000):
        v.show_path(rg1_uncompressed)
    return v


def mouse(
    widget,
    kind: QEvent.Type,
    pos: QPointF,
    buttons: Qt.MouseButton,  # noqa: ANN001
    button: Qt.MouseButton = Qt.MouseButton.NoButton,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
) -> None:
    event = QMouseEvent(kind, pos, widget.mapToGlobal(pos), button, buttons, modifiers)
    QApplication.sendEvent(widget, event)


def drag(widget, start: QPointF, end: QPointF, **kw) -> None:  # noqa: ANN001
    left = Qt.MouseButton.LeftButton
    mouse(widget, QEvent.Type.MouseButtonPress, start, left, left, **kw)
    for t in np.linspace(0.2, 1.0, 5):
        mouse(widget, QEvent.Type.MouseMove, start + (end - start) * float(t), left, **kw)
    mouse(widget, QEvent.Type.MouseButtonRelease, end, Qt.MouseButton.NoButton, left, **kw)


def test_displayed_pixels_come_from_the_foundation_pipeline(viewer: ImageViewer) -> None:
    view = viewer.view
    assert view.width == 1841 and view.height == 1955
    # MONOCHROME1 is displayed correctly by the pipeline: rendered inverted, yet "Invert" is not pressed.
    assert viewer.invert is False and viewer.rendered_inverted
    shown = qimage_to_array(viewer.displayed_image())
    expected = render(view.preview, viewer.window, invert=True)
    assert np.array_equal(shown, expected)
    # The preview is a block mean of the modality values, at most PREVIEW_MAX a side.
    assert max(view.preview.values.shape) <= PREVIEW_MAX
    factor = int(np.ceil(max(view.height, view.width) / PREVIEW_MAX))
    assert view.preview.values[0, 0] == pytest.approx(float(view.display.values[:factor, :factor].mean()), rel=1e-5)


def test_window_level_changes_the_displayed_pixels(viewer: ImageViewer) -> None:
    before = qimage_to_array(viewer.displayed_image())
    window = viewer.window
    drag(viewer, QPointF(400, 350), QPointF(520, 300))
    after_window = viewer.window
    assert after_window.width > window.width  # drag right = wider
    assert after_window.center != window.center  # drag up = level moves
    after = qimage_to_array(viewer.displayed_image())
    assert not np.array_equal(before, after)
    assert np.array_equal(after, render(viewer.view.preview, after_window, invert=True))
    # Presets: each gives a different picture; "Full range" spans min..max.
    presets = {p.name: p for p in viewer.presets()}
    assert {"Lung", "Mediastinum / soft tissue", "Bone", "Full range"} <= set(presets)
    assert presets["Full range"].width == pytest.approx(float(np.ptp(viewer.view.display.values[::4, ::4])), rel=0.02)
    images = []
    for name in ("Lung", "Bone", "Full range"):
        viewer.set_window(presets[name])
        images.append(qimage_to_array(viewer.displayed_image()))
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
    # Invert flips the output (up to 8-bit rounding).
    viewer.set_invert(True)  # invert what is shown
    assert not viewer.rendered_inverted
    flipped = qimage_to_array(viewer.displayed_image()).astype(int)
    assert np.abs(flipped - (255 - images[2].astype(int))).max() <= 1
    viewer.reset()
    default = viewer.view.display.default_window
    assert (viewer.window.center, viewer.window.width) == (default.center, default.width)
    assert not viewer.invert and viewer.rendered_inverted


def test_preview_render_is_fast_enough_for_dragging(viewer: ImageViewer) -> None:
    viewer.render_ms.clear()
    for i in range(10):
        viewer.set_window(dataclasses.replace(viewer.window, center=viewer.window.center + 50 * i))
    assert len(viewer.render_ms) == 10
    # Generous bound for a loaded shared CI machine; typically a few ms.
    assert float(np.median(viewer.render_ms)) < 60.0


def test_zoom_pan_fit_and_full_resolution_render(qtbot, viewer: ImageViewer) -> None:  # noqa: ANN001
    fit_zoom = viewer.zoom
    assert fit_zoom == pytest.approx(min(800 / 1841, 700 / 1955), rel=1e-3)
    wheel = QWheelEvent(
        QPointF(400, 350),
        viewer.mapToGlobal(QPointF(400, 350)),
        QPoint(0, 0),
        QPoint(0, 240),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(viewer, wheel)
    assert viewer.zoom == pytest.approx(fit_zoom * 1.25**2, rel=1e-6)
    viewer.one_to_one()
    assert viewer.zoom == 1.0
    # At 1:1 the preview is too coarse: a full-resolution render arrives from a worker.
    qtbot.waitUntil(lambda: viewer.displayed_image().width() == 1841, timeout=30000)
    full = qimage_to_array(viewer.displayed_image())
    assert np.array_equal(full, render(viewer.view.display, viewer.window, invert=True))
    # Shift + drag pans (the window does not change).
    window = viewer.window
    offset = viewer._current_offset()
    drag(viewer, QPointF(300, 300), QPointF(350, 320), modifiers=Qt.KeyboardModifier.ShiftModifier)
    assert viewer.window == window
    assert viewer._current_offset() - offset == QPointF(50, 20)
    viewer.fit()
    assert viewer.zoom == pytest.approx(fit_zoom)


def test_overlay_box_is_drawn_and_toggled(viewer: ImageViewer) -> None:
    viewer.fit()
    viewer.set_box((100, 100, 1700, 1800), fallback=False)
    with_box = qimage_to_array(viewer.grab().toImage())
    viewer.set_overlay_visible(False)
    without = qimage_to_array(viewer.grab().toImage())
    assert not np.array_equal(with_box, without)


def test_cache_and_unreadable_file(qtbot, tmp_path: Path, rg1_uncompressed: Path) -> None:  # noqa: ANN001
    cache = ViewCache(capacity=1)
    v = ImageViewer(cache=cache)
    qtbot.addWidget(v)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"DICM" * 10)
    with qtbot.waitSignal(v.loadFailed, timeout=30000):
        v.show_path(bad)
    assert "Cannot display bad.dcm" in v.message
    with qtbot.waitSignal(v.imageLoaded, timeout=60000):
        v.show_path(rg1_uncompressed)
    assert len(cache) == 1
    t0 = time.perf_counter()
    with qtbot.waitSignal(v.imageLoaded, timeout=1000):  # from the cache: synchronous
        v.show_path(rg1_uncompressed)
    assert time.perf_counter() - t0 < 0.5


def test_prepare_view_helpers(rg1_uncompressed: Path) -> None:
    values = np.arange(36, dtype=np.float32).reshape(6, 6)
    small = downsample(values, max_side=3)
    assert small.shape == (3, 3) and small[0, 0] == pytest.approx((0 + 1 + 6 + 7) / 4)
    assert downsample(values, max_side=6) is values
    display = load_display_image(rg1_uncompressed)
    presets = brightness_presets(display)
    # The file's own windows come first (RG1 has one), then the computed ones.
    assert display.windows and (presets[0].center, presets[0].width) == (
        display.windows[0].center,
        display.windows[0].width,
    )
    lung = next(p for p in presets if p.name == "Lung")
    bone = next(p for p in presets if p.name == "Bone")
    # MONOCHROME1: dark on screen (air, lungs) = high values, so the lung window sits above bone's.
    assert lung.center > bone.center
    view = prepare_view(rg1_uncompressed)
    assert view.scale == pytest.approx(view.preview.values.shape[1] / 1841)


def test_4k_image_window_level_stays_off_the_full_resolution(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    """A 4096 x 4096 16-bit image: dragging the window re-renders only the screen-sized preview."""
    from pneumoview.dicom.display import DisplayImage, Window
    from pneumoview.ui.viewer import view_from_display

    rng = np.random.default_rng(1)
    values = (rng.random((4096, 4096), dtype=np.float32) * 4095).astype(np.float32)
    display = DisplayImage(
        values=values,
        photometric="MONOCHROME2",
        invert=False,
        windows=[],
        default_window=Window(2048, 4096, name="auto"),
    )
    view = view_from_display(display, tmp_path / "big.dcm")
    assert max(view.preview.values.shape) <= PREVIEW_MAX and view.scale < 0.35
    cache = ViewCache()
    cache.put(view)
    v = ImageViewer(cache=cache)
    qtbot.addWidget(v)
    v.resize(900, 900)
    v.show()
    v.show_path(tmp_path / "big.dcm")  # from the cache: no file is read
    assert v.view is view
    v.render_ms.clear()
    drag(v, QPointF(400, 400), QPointF(600, 300))
    assert len(v.render_ms) == 5
    assert float(np.median(v.render_ms)) < 60.0  # per drag frame, preview only
    assert v.displayed_image().width() == view.preview.values.shape[1]


def test_the_gui_process_never_decodes_pixel_data(qtbot, monkeypatch, rg1_uncompressed: Path) -> None:
    """Every pixel decoder entry point of pydicom (and PneumoView's own) is booby-trapped in this
    process: the viewer, the model crop and load_grey still work, because workers decode."""
    import pydicom.pixels.decoders.base as decoders
    import pydicom.pixels.utils as pixel_utils

    from pneumoview.dicom import pixels
    from pneumoview.imageio import load_grey
    from pneumoview.preprocess import prepare

    calls: list[str] = []

    def trap(name: str) -> Callable[..., None]:
        def called(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"{name} called in the GUI process")

        return called

    for owner, name in (
        (decoders.Decoder, "as_array"),
        (decoders.Decoder, "as_buffer"),
        (decoders.Decoder, "iter_array"),
        (decoders.Decoder, "iter_buffer"),
        (pixel_utils, "pixel_array"),
        (pixels, "pixel_array"),
        (pixels, "decode_first_frame"),
    ):
        monkeypatch.setattr(owner, name, trap(name))
    v = ImageViewer(cache=ViewCache(capacity=1))
    qtbot.addWidget(v)
    with qtbot.waitSignal(v.imageLoaded, timeout=60000):
        v.show_path(rg1_uncompressed)
    assert v.view is not None and v.view.height == 1955
    assert prepare(rg1_uncompressed).crop.shape == (224, 224)
    assert load_grey(rg1_uncompressed).pixels.shape == (1955, 1841)
    assert calls == []


def test_hostile_files_give_a_reason_and_the_viewer_stays_up(qtbot, tmp_path: Path, rg1_uncompressed: Path) -> None:
    import os

    pipe = tmp_path / "pipe.dcm"
    os.mkfifo(pipe)
    v = ImageViewer(cache=ViewCache(capacity=1))
    qtbot.addWidget(v)
    with qtbot.waitSignal(v.loadFailed, timeout=30000):
        v.show_path(pipe)
    assert "not-a-regular-file" in v.message
    with qtbot.waitSignal(v.imageLoaded, timeout=60000):
        v.show_path(rg1_uncompressed)
