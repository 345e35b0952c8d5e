"""Progress and sizes for the management commands: a bar on a terminal, plain lines elsewhere.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from django.core.management.base import OutputWrapper

UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
BAR_WIDTH = 24
REDRAW_INTERVAL = 0.1  # seconds: redrawing on every chunk would cost more than the work
CLEAR_LINE = "\r\x1b[K"


def format_size(size: int) -> str:
    """Return ``size`` in bytes as a short human-readable string ("1.5 MiB")."""
    if abs(size) < 1024:
        return f"{size} bytes" if size != 1 else "1 byte"
    value = float(size)
    for unit in UNITS[1:]:
        value /= 1024
        if abs(value) < 1024 or unit == UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def _identity(text: str) -> str:
    return text


class Progress:
    """Show how far a job got on ``stderr``, redrawn in place, when it is a terminal.

    Elsewhere (a pipe, a log file, a test) it draws nothing: the commands' own one-line-per-
    file output is the plain record. Lines written through :meth:`write` never mix with the
    bar on a terminal.
    """

    def __init__(self, stderr: OutputWrapper, total: int, *, enabled: bool | None = None) -> None:
        self.stderr = stderr
        self.total = total
        self.done = 0
        self.label = ""
        self.enabled = stderr.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._visible = False

    def set_label(self, label: str) -> None:
        """Name what is being worked on (a file name) next to the bar."""
        self.label = label
        self._draw(force=True)

    def advance(self, amount: int) -> None:
        """Count ``amount`` more bytes as done."""
        self.done += amount
        self._draw()

    def write(
        self, stream: OutputWrapper, line: str, style_func: Callable[[str], str] | None = None
    ) -> None:
        """Write ``line`` to ``stream`` (stdout or stderr) without garbling the bar."""
        self._clear()
        stream.write(line, style_func=style_func)
        stream.flush()
        self._draw(force=True)

    def close(self) -> None:
        """Remove the bar from the terminal."""
        self._clear()
        self.enabled = False

    def _clear(self) -> None:
        if self._visible:
            self.stderr.write(CLEAR_LINE, style_func=_identity, ending="")
            self.stderr.flush()
            self._visible = False

    def render(self, width: int) -> str:
        """Return the bar as one line of at most ``width`` characters."""
        fraction = min(self.done / self.total, 1.0) if self.total > 0 else 1.0
        filled = int(fraction * BAR_WIDTH)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        line = (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {int(fraction * 100):3d}% "
            f"{format_size(self.done)} / {format_size(self.total)} "
            f"{format_size(int(self.done / elapsed))}/s"
        )
        room = width - 1 - len(line) - 2  # the last column would wrap on some terminals
        if self.label and room > 1:
            # The end of a path says more than its start.
            label = self.label if len(self.label) <= room else "…" + self.label[-(room - 1) :]
            line += f"  {label}"
        return line[: max(width - 1, 0)]

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < REDRAW_INTERVAL:
            return
        self._drawn_at = now
        width = shutil.get_terminal_size().columns
        self.stderr.write(CLEAR_LINE + self.render(width), style_func=_identity, ending="")
        self.stderr.flush()
        self._visible = True
