"""What every bound endpoint's owner does alike: run ``poll_once`` in a loop, in the foreground (the
CLI commands) or on a background thread (tests, in-process use).

    serve_until_stopped(lambda: server.poll_once(0.05), max_seconds=0, status=server.status, status_every_s=10)

``BackgroundServing`` gives a class with ``poll_once(timeout_s)``, ``link`` and ``_stop`` (an
Event) the methods ``serve_forever``, ``start``, ``stop`` and the context-manager protocol.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


def serve_until_stopped(poll_once: Callable[[], Any], *, max_seconds: float = 0.0, status_every_s: float = 0.0,
                        status: Callable[[], Any] | None = None, logger: logging.Logger = log) -> None:
    """Call ``poll_once()`` until SIGTERM (handler installed when on the main thread), Ctrl-C or
    ``max_seconds`` (0: no limit); log ``status()`` every ``status_every_s`` seconds (0: never).
    ``poll_once`` should return within a fraction of a second so a stop is noticed promptly."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    start = last_status = time.monotonic()
    try:
        while not stop.is_set():
            poll_once()
            now = time.monotonic()
            if max_seconds and now - start > max_seconds:
                break
            if status is not None and status_every_s and now - last_status > status_every_s:
                last_status = now
                logger.info("status %s", status())
    except KeyboardInterrupt:
        pass


class BackgroundServing:
    """Mixin: ``serve_forever()`` / ``start()`` / ``stop()`` / ``with`` for a server object that has
    ``poll_once(timeout_s)``, ``link`` and ``_stop: threading.Event`` (and sets ``_thread = None``)."""

    _serve_poll_s: float = 0.05  # poll_once timeout inside serve_forever
    _thread_name: str = "server"
    _stop: threading.Event
    _thread: threading.Thread | None
    link: Any

    def poll_once(self, timeout_s: float) -> int:  # pragma: no cover - provided by the server class
        raise NotImplementedError

    def serve_forever(self) -> None:
        """Serve until ``stop()``; closes the endpoint on the way out."""
        try:
            while not self._stop.is_set():
                self.poll_once(self._serve_poll_s)
        finally:
            self.link.close()

    def start(self) -> Any:
        """Serve on a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name=self._thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the background thread (if any) and close the endpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        else:
            self.link.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
