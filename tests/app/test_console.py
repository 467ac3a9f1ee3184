"""Issue 13 item 8: library noise kept off the console (ui.app.quiet_console).

Gradio 5.50 prints "content_type application/json" for every component request (135 lines
in 6 minutes), and FastRTC warns "Received ICE candidate for unknown connection" (64
lines) when a trickled candidate races its connection. Both must stay off the console at
the default log level; everything else still gets through.
"""
from __future__ import annotations

import logging

from ui.app import NOISY_FASTRTC_LOGGER, quiet_console


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_gradio_content_type_prints_are_dropped_and_other_prints_kept(capsys):
    import gradio.routes as routes
    quiet_console()
    routes.print("content_type", "application/json")
    routes.print("* Monitoring URL: x *")
    assert capsys.readouterr().out == "* Monitoring URL: x *\n"


def test_unknown_ice_candidate_warnings_show_only_when_debugging():
    quiet_console()
    quiet_console()                                   # twice: still one filter
    log = logging.getLogger(NOISY_FASTRTC_LOGGER)
    keep = _Keep()
    log.addHandler(keep)
    old_level = log.level
    try:
        log.warning("Received ICE candidate for unknown connection: abc")
        log.warning("something else went wrong")
        assert keep.lines == ["something else went wrong"]
        log.setLevel(logging.DEBUG)
        log.warning("Received ICE candidate for unknown connection: abc")
        assert keep.lines[-1].startswith("Received ICE candidate")
        assert len(log.filters) == 1
    finally:
        log.removeHandler(keep)
        log.setLevel(old_level)
