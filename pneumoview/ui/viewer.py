"""The radiograph viewer: 16-bit display through the foundation's pipeline, off the GUI thread.

* Pixels come from :func:`pneumoview.dicom.display.load_display_image` (modality LUT, VOI
  presets, MONOCHROME1), decoded in a decoder worker process (:mod:`pneumoview.dicom.sandbox`:
  a file that crashes or hangs a codec shows its reason code, the window stays up), and are
  turned into 8 bits by :func:`pneumoview.dicom.display.render`; this module (and the GUI
  process) never decodes or windows pixels itself.
* Loading runs in a worker (:func:`prepare_view`), which also builds a screen-sized *preview*
  (block mean, at most :data:`PREVIEW_MAX` pixels a side) and the window presets. The viewer
  draws the preview whenever the zoom makes the image no larger than the preview, and renders
  the preview synchronously while the reviewer drags the window (a few ms per frame for a
  4k x 4k image). Full-resolution renders (only needed when zoomed in past the preview) run in
  a worker and replace the preview when they arrive.
* :class:`ViewCache` keeps the last few prepared images (LRU), so going back and forth between
  images is instant.

Mouse: left drag = window/level (horizontal: width, vertical: level), middle drag or
Shift + left drag = pan, wheel = zoom about the cursor, double click = fit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QTransform, QWheelEvent
from PySide6.QtWidgets import QWidget

from pneumoview.ui.workers import FunctionJob, start

if TYPE_CHECKING:
    from types import ModuleType

    from PySide6.QtGui import QPaintEvent, QResizeEvent

    from pneumoview.dicom.display import DisplayImage, Window

log = logging.getLogger(__name__)

PREVIEW_MAX = 1280  # longest side of the screen-sized preview, pixels
ZOOM_MIN, ZOOM_MAX = 0.02, 32.0


def _display_module() -> ModuleType:
    from pneumoview.dicom import display

    return display


def downsample(values: np.ndarray, max_side: int = PREVIEW_MAX) -> np.ndarray:
    """float32 HxW -> float32 (H/f)x(W/f) by block mean over f x f blocks, f = ceil(max(H,W)/max_side)."""
    h, w = values.shape[:2]
    factor = max(1, math.ceil(max(h, w) / max_side))
    if factor == 1:
        return values
    hh, ww = h // factor, w // factor
    blocks = values[: hh * factor, : ww * factor].reshape(hh, factor, ww, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def brightness_presets(display: DisplayImage) -> list[Window]:
    """Window presets for projection radiographs (values are not Hounsfield units).

    Computed from percentiles of the displayed brightness order (MONOCHROME1 inverted):
    "Lung" spreads the darker, air-filled part; "Mediastinum / soft tissue" the middle;
    "Bone" the brightest part; "Full range" min..max. The file's own windows come first.
    """
    mod = _display_module()
    window_type = mod.Window
    values = display.values
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
    lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0

    def window_between(p_dark: float, p_bright: float, name: str) -> Window:
        # In brightness order: for an inverted (MONOCHROME1) image, dark = high values.
        if display.invert:
            a, b = np.percentile(sample, [100 - p_bright, 100 - p_dark])
        else:
            a, b = np.percentile(sample, [p_dark, p_bright])
        a, b = float(a), float(b)
        if b <= a:
            b = a + 1.0
        return window_type(center=(a + b) / 2, width=b - a, name=name)

    presets = list(display.windows)
    if display.default_window not in presets:  # no window in the file: the automatic one
        presets.insert(0, display.default_window)
    presets = [w if w.name else dataclasses.replace(w, name=f"File {i + 1}") for i, w in enumerate(presets)]
    presets += [
        window_between(1, 55, "Lung"),
        window_between(30, 97, "Mediastinum / soft tissue"),
        window_between(55, 99.9, "Bone"),
        window_type(center=(lo + hi) / 2, width=hi - lo, name="Full range"),
    ]
    return presets


@dataclass
class PreparedView:
    """A DICOM image made ready for the viewer (built in a worker thread)."""

    path: Path
    display: DisplayImage  # at full resolution
    preview: DisplayImage  # values downsampled (may be ``display`` itself)
    presets: list[Window]  # file's first
    scale: float  # preview pixels per full-resolution pixel (<= 1)

    @property
    def width(self) -> int:
        return int(self.display.values.shape[1])

    @property
    def height(self) -> int:
        return int(self.display.values.shape[0])


def prepare_view(path: Path) -> PreparedView:
    """Load (sandboxed decode), build the preview and presets (worker thread; raises PneumoViewError
    subclasses, DecoderError with ``decoder-crashed`` / ``decoder-timeout`` / ``decoder-memory`` included)."""
    from pneumoview.imageio import load_viewable  # DICOM, or a PNG/JPEG/TIFF picture (no DICOM header)

    return view_from_display(load_viewable(Path(path)), Path(path))


def view_from_display(display: DisplayImage, path: Path) -> PreparedView:
    """Preview + presets for an already loaded DisplayImage (worker thread)."""
    small = downsample(display.values)
    preview = display if small is display.values else dataclasses.replace(display, values=small)
    scale = small.shape[1] / display.values.shape[1]
    return PreparedView(Path(path), display, preview, brightness_presets(display), scale)


def to_qimage(grey: np.ndarray) -> QImage:
    """uint8 HxW -> QImage (Format_Grayscale8, deep copy so the array may go)."""
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    h, w = grey.shape
    return QImage(grey.data, w, h, w, QImage.Format.Format_Grayscale8).copy()


class ViewCache:
    """LRU of :class:`PreparedView` by path (keeps a few images; they are large)."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Path, PreparedView] = OrderedDict()

    def get(self, path: Path) -> PreparedView | None:
        item = self._items.get(Path(path))
        if item is not None:
            self._items.move_to_end(Path(path))
        return item

    def put(self, view: PreparedView) -> None:
        self._items[view.path] = view
        self._items.move_to_end(view.path)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class ImageViewer(QWidget):
    """Shows one radiograph with window/level, invert, zoom, pan and the lung-box overlay."""

    windowChanged = Signal(object)  # Window
    imageLoaded = Signal(object)  # Path
    loadFailed = Signal(str)
    zoomChanged = Signal(float)
    attentionCleared = Signal()  # the model-attention layer went away (another image, or cleared)

    #: Caption drawn with the model-attention layer (:data:`pneumoview.inference.attention_maps.HEATMAP_LABEL`'s gist).
    ATTENTION_CAPTION = "model attention \u2014 not a lesion finding"
    viewMoved = Signal()  # zoom, pan or fit changed (side-by-side sync: ui/compare_view.py)

    def __init__(self, parent: QWidget | None = None, cache: ViewCache | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 320)
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.cache = cache if cache is not None else ViewCache()
        self.view: PreparedView | None = None
        # Any: this attribute (a Window or None) shadows QWidget.window(), which a typed one would contradict
        self.window: Any = None
        # "Invert what is shown": False for every new image, also MONOCHROME1, which the display
        # pipeline already shows correctly (Photometric Interpretation (0028,0004), Presentation LUT
        # Shape (2050,0020)); True flips the correctly displayed picture.
        self.invert: bool = False
        self.box: tuple[int, int, int, int] | None = None
        self.box_fallback = False
        self.overlay_visible = True
        self.message = "Open a folder or drop DICOM files here"
        self._preview_image: QImage | None = None
        self._full_image: QImage | None = None
        self._full_generation = 0
        self._zoom = 1.0
        self._fit = True
        self._offset = QPointF(0, 0)  # widget position of image pixel (0, 0)
        self._drag_start: QPointF | None = None
        self._drag_mode = ""
        self._drag_window: Window | None = None
        self._drag_offset = QPointF()
        self._pending_path: Path | None = None
        self._jobs: list[FunctionJob] = []
        self._full_timer = QTimer(self)
        self._full_timer.setSingleShot(True)
        self._full_timer.setInterval(150)
        self._full_timer.timeout.connect(self._request_full_render)
        self.render_ms: list[float] = []  # recent preview render times (benchmarks/tests)
        self.pool: QThreadPool | None = None  # None = the global pool
        self.attention_path: Path | None = None  # the image the attention layer belongs to
        self.attention_map: np.ndarray | None = None  # float32 [h, w] in [0, 1]: the map in (scaled) image pixels
        self._attention_image: QImage | None = None

    # -- loading -----------------------------------------------------------------------------
    def show_path(self, path: Path | None) -> None:
        """Show the image at ``path`` (cached, else prepared in a worker)."""
        if path is None:
            self.clear()
            return
        path = Path(path)
        cached = self.cache.get(path)
        if cached is not None:
            self._pending_path = None
            self._set_view(cached)
            return
        self._pending_path = path
        self.message = f"Loading {path.name}..."
        self._preview_image = None
        self._full_image = None
        self.view = None
        self.update()
        job = FunctionJob(prepare_view, path, wanted=lambda p=path: self._pending_path == p)
        job.signals.finished.connect(lambda view, p=path: self._on_prepared(p, view))
        job.signals.failed.connect(lambda msg, p=path: self._on_failed(p, msg))
        self._keep(job)
        start(job, self.pool)

    def _keep(self, job: FunctionJob) -> None:
        self._jobs = [j for j in self._jobs if not j.done.is_set()]
        self._jobs.append(job)

    def _on_prepared(self, path: Path, view: PreparedView) -> None:
        self.cache.put(view)
        if self._pending_path == path:
            self._pending_path = None
            self._set_view(view)

    def _on_failed(self, path: Path, message: str) -> None:
        if self._pending_path == path:
            self._pending_path = None
            self.view = None
            self.message = f"Cannot display {path.name}: {message}"
            self.update()
            self.loadFailed.emit(message)

    def clear(self) -> None:
        self.view = None
        self._preview_image = None
        self._full_image = None
        self.box = None
        self.set_attention(None)
        self.message = "No image selected"
        self.update()

    def _set_view(self, view: PreparedView) -> None:
        same_image = self.view is not None and self.view.path == view.path
        self.view = view
        if not same_image:
            default = view.display.default_window
            # The preset equal to the default window (it may carry a display name).
            self.window = next(
                (
                    p
                    for p in view.presets
                    if (p.center, p.width, p.function) == (default.center, default.width, default.function)
                ),
                default,
            )
            self.invert = False
            self._fit = True
            if self.attention_path != view.path:
                self.set_attention(None)
        self._render_preview()
        self._full_image = None
        self._schedule_full()
        self.update()
        self.imageLoaded.emit(view.path)
        self.windowChanged.emit(self.window)

    # -- state -------------------------------------------------------------------------------
    def set_window(self, window: Window) -> None:
        if self.view is None:
            return
        self.window = window
        self._render_preview()
        self._full_image = None
        self._schedule_full()
        self.update()
        self.windowChanged.emit(window)

    def set_invert(self, invert: bool) -> None:
        if self.view is None or invert == self.invert:
            self.invert = invert
            return
        self.invert = invert
        self._render_preview()
        self._full_image = None
        self._schedule_full()
        self.update()

    @property
    def rendered_inverted(self) -> bool:
        """Whether values are rendered inverted: the file's MONOCHROME1 / INVERSE inversion, flipped by ``invert``."""
        return bool(self.view is not None and self.view.display.invert) != self.invert

    def set_box(self, box: tuple[int, int, int, int] | None, fallback: bool = False) -> None:
        self.box = box
        self.box_fallback = fallback
        self.update()

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay_visible = visible
        self.update()

    def set_attention(
        self, crop_map: np.ndarray | None, box: tuple[int, int, int, int] | None = None, *, fallback: bool = False
    ) -> None:
        """Show (or, with None, remove) the model-attention layer over the image on screen.

        ``crop_map``: float [S, S] in [0, 1] over the model's crop (the analysis worker's ``heatmap``
        event, decoded); ``box``: the crop's lung rectangle x0, y0, x1, y1 in image pixels. The map is
        mapped back through the box (:meth:`pneumoview.inference.attention_maps.Heatmap.on_image`, at
        the preview's scale) and drawn as a transparent colour layer, captioned :data:`ATTENTION_CAPTION`.
        """
        from pneumoview.inference.attention_maps import Heatmap, heat_rgba

        had = self._attention_image is not None
        self.attention_map, self._attention_image, self.attention_path = None, None, None
        if crop_map is not None and box is not None and self.view is not None:
            from pneumoview.dicom.lungs import LungBox

            scale = self.view.scale
            x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
            shape = (max(1, round(self.view.height * scale)), max(1, round(self.view.width * scale)))
            scaled = LungBox(x0, y0, max(x0 + 1, x1), max(y0 + 1, y1), fallback=fallback, confidence=0.0)
            heat = Heatmap(np.asarray(crop_map, np.float32), 0.0).on_image(scaled, shape)
            rgba = np.ascontiguousarray(heat_rgba(heat))
            h, w, _ = rgba.shape
            self._attention_image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
            self.attention_map, self.attention_path = heat, self.view.path
        elif had:
            self.attentionCleared.emit()
        self.update()

    def presets(self) -> list[Window]:
        return list(self.view.presets) if self.view else []

    def reset(self) -> None:
        """Default window, the file's own display (no extra inversion), fit to the widget."""
        if self.view is None:
            return
        self.invert = False
        self._fit = True
        default = self.view.display.default_window
        self.set_window(
            next(
                (
                    p
                    for p in self.view.presets
                    if (p.center, p.width, p.function) == (default.center, default.width, default.function)
                ),
                default,
            )
        )

    def fit(self) -> None:
        self._fit = True
        self._schedule_full()
        self.update()
        self.viewMoved.emit()

    def one_to_one(self) -> None:
        if self.view is None:
            return
        centre = self._widget_to_image(QPointF(self.width() / 2, self.height() / 2))
        self._set_zoom(1.0, anchor_widget=QPointF(self.width() / 2, self.height() / 2), anchor_image=centre)

    @property
    def zoom(self) -> float:
        if self._fit:
            return self._fit_zoom()
        return self._zoom

    def _fit_zoom(self) -> float:
        if self.view is None:
            return 1.0
        return min(self.width() / self.view.width, self.height() / self.view.height)

    def _set_zoom(self, zoom: float, *, anchor_widget: QPointF, anchor_image: QPointF) -> None:
        zoom = max(ZOOM_MIN, min(ZOOM_MAX, zoom))
        self._fit = False
        self._zoom = zoom
        self._offset = QPointF(anchor_widget.x() - anchor_image.x() * zoom, anchor_widget.y() - anchor_image.y() * zoom)
        self._schedule_full()
        self.update()
        self.zoomChanged.emit(zoom)
        self.viewMoved.emit()

    def _current_offset(self) -> QPointF:
        if self._fit and self.view is not None:
            z = self._fit_zoom()
            return QPointF((self.width() - self.view.width * z) / 2, (self.height() - self.view.height * z) / 2)
        return self._offset

    def _widget_to_image(self, p: QPointF) -> QPointF:
        z, off = self.zoom, self._current_offset()
        return QPointF((p.x() - off.x()) / z, (p.y() - off.y()) / z)

    # -- rendering ---------------------------------------------------------------------------
    def _render_preview(self) -> None:
        import time

        assert self.view is not None
        t0 = time.perf_counter()
        grey = _display_module().render(self.view.preview, self.window, invert=self.rendered_inverted)
        self._preview_image = to_qimage(grey)
        self.render_ms = (self.render_ms + [(time.perf_counter() - t0) * 1000])[-50:]

    def _needs_full(self) -> bool:
        return (
            self.view is not None
            and self.view.scale < 1.0
            and self.zoom * self.view.width > (self.view.preview.values.shape[1] * 1.05)
        )

    def _schedule_full(self) -> None:
        if self._needs_full() and self._full_image is None:
            self._full_timer.start()

    def _request_full_render(self) -> None:
        if self.view is None or not self._needs_full() or self._drag_mode == "window":
            return
        self._full_generation += 1
        generation = self._full_generation
        view, window, invert = self.view, self.window, self.rendered_inverted
        job = FunctionJob(lambda: to_qimage(_display_module().render(view.display, window, invert=invert)))
        job.signals.finished.connect(lambda img, g=generation: self._on_full(g, img))
        self._keep(job)
        start(job, self.pool)

    def _on_full(self, generation: int, image: QImage) -> None:
        if generation == self._full_generation:
            self._full_image = image
            self.update()

    def displayed_image(self) -> QImage | None:
        """The 8-bit image currently drawn (full resolution if ready, else the preview)."""
        if self._full_image is not None and self._needs_full():
            return self._full_image
        return self._preview_image

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(0, 0, 0))
        if self.view is None or self._preview_image is None:
            painter.setPen(QColor(200, 200, 200))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.message)
            painter.end()
            return
        z, off = self.zoom, self._current_offset()
        target = QRectF(off.x(), off.y(), self.view.width * z, self.view.height * z)
        image = self.displayed_image()
        assert image is not None
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, z < 2.0)
        painter.drawImage(target, image, QRectF(image.rect()))
        if self._attention_image is not None:
            painter.drawImage(target, self._attention_image, QRectF(self._attention_image.rect()))
            caption = QRectF(4, 4, painter.fontMetrics().horizontalAdvance(self.ATTENTION_CAPTION) + 10, 20)
            painter.fillRect(caption, QColor(0, 0, 0, 170))
            painter.setPen(QColor(255, 215, 0))
            painter.drawText(caption, Qt.AlignmentFlag.AlignCenter, self.ATTENTION_CAPTION)
        if self.overlay_visible and self.box is not None:
            x0, y0, x1, y1 = self.box
            rect = QRectF(off.x() + x0 * z, off.y() + y0 * z, (x1 - x0) * z, (y1 - y0) * z)
            pen = QPen(QColor(255, 140, 0) if self.box_fallback else QColor(255, 215, 0))
            pen.setWidth(2)
            if self.box_fallback:
                pen.setStyle(Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawRect(rect)
            painter.drawText(
                rect.adjusted(6, 4, 0, 0).topLeft() + QPointF(0, 12),
                "whole image (lungs not found)" if self.box_fallback else "model input",
            )
        if self.window is not None:
            text = (
                f"W {self.window.width:.0f}  L {self.window.center:.0f}"
                f"{'  inverted' if self.invert else ''}  zoom {z * 100:.0f}%"
            )
            metrics = painter.fontMetrics()
            box = QRectF(
                4, self.height() - metrics.height() - 8, metrics.horizontalAdvance(text) + 10, metrics.height() + 4
            )
            painter.fillRect(box, QColor(0, 0, 0, 170))
            painter.setPen(QColor(230, 230, 230))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        self._paint_no_header_marker(painter)
        painter.end()

    # -- mouse -------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self.view is None:
            return
        pan = event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton and event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        )
        if pan:
            self._drag_mode = "pan"
            self._drag_offset = self._current_offset()
            self._zoom = self.zoom
            self._fit = False
        elif event.button() == Qt.MouseButton.LeftButton:
            self._drag_mode = "window"
            self._drag_window = self.window
        else:
            return
        self._drag_start = event.position()
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag_start is None or self.view is None:
            return
        delta = event.position() - self._drag_start
        if self._drag_mode == "pan":
            self._offset = self._drag_offset + delta
            self.update()
            self.viewMoved.emit()
        elif self._drag_mode == "window" and self._drag_window is not None:
            span = max(float(self._value_span()), 1.0)
            step = span / max(self.width(), 200)  # one widget width = the full value range
            w = max(1.0, self._drag_window.width + delta.x() * step)
            sign = -1.0 if self.rendered_inverted else 1.0  # drag down = darker on screen
            c = self._drag_window.center - delta.y() * step * sign
            window = dataclasses.replace(self._drag_window, center=c, width=w, name="Custom")
            self.set_window(window)
        event.accept()

    def _value_span(self) -> float:
        assert self.view is not None
        full = [p for p in self.view.presets if p.name == "Full range"]
        return full[0].width if full else float(np.ptp(self.view.preview.values))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self._drag_start = None
        self._drag_mode = ""
        self._schedule_full()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if self.view is None:
            return
        steps = event.angleDelta().y() / 120.0
        if not steps:
            return
        anchor = event.position()
        image_point = self._widget_to_image(anchor)
        self._set_zoom(self.zoom * (1.25**steps), anchor_widget=anchor, anchor_image=image_point)
        event.accept()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._schedule_full()

    # -- pictures and side-by-side sync (ui/compare_view.py) ---------------------------------------
    @property
    def no_dicom_header(self) -> bool:
        """True while a PNG/JPEG/TIFF picture is shown (:func:`pneumoview.imageio.load_picture_display`)."""
        from pneumoview.dicom.pictures import NO_DICOM_HEADER

        return self.view is not None and NO_DICOM_HEADER in self.view.display.notes

    def _paint_no_header_marker(self, painter: QPainter) -> None:
        if not self.no_dicom_header:
            return
        from pneumoview.dicom.pictures import NO_DICOM_HEADER

        text = f"{NO_DICOM_HEADER.upper()}: picture shown as stored"
        metrics = painter.fontMetrics()
        box = QRectF(4, 4, metrics.horizontalAdvance(text) + 12, metrics.height() + 6)
        painter.fillRect(box, QColor(150, 60, 0, 210))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    def view_state(self) -> tuple[float, float, float] | None:
        """``(zoom relative to fit, centre x, centre y)``, the centre as a fraction (0..1) of the image's
        width and height under the widget's centre; None with no image."""
        if self.view is None or self._fit_zoom() <= 0:
            return None
        centre = self._widget_to_image(QPointF(self.width() / 2, self.height() / 2))
        return self.zoom / self._fit_zoom(), centre.x() / self.view.width, centre.y() / self.view.height

    def set_view_state(self, relative_zoom: float, centre_x: float, centre_y: float) -> None:
        """Show ``relative_zoom`` x the fit zoom with image point (``centre_x``, ``centre_y``) (fractions) at
        the widget's centre: :meth:`view_state` of another viewer applied to this one."""
        if self.view is None:
            return
        if abs(relative_zoom - 1.0) < 1e-6 and abs(centre_x - 0.5) < 1e-6 and abs(centre_y - 0.5) < 1e-6:
            self.fit()
            return
        anchor = QPointF(centre_x * self.view.width, centre_y * self.view.height)
        self._set_zoom(
            relative_zoom * self._fit_zoom(),
            anchor_widget=QPointF(self.width() / 2, self.height() / 2),
            anchor_image=anchor,
        )


def transform_for(zoom: float, offset: QPointF) -> QTransform:
    """Image -> widget transform (for overlays drawn by other widgets)."""
    return QTransform(zoom, 0, 0, zoom, offset.x(), offset.y())
