"""Running the app under uvicorn until a stop signal, then draining what is in flight.

A stop signal (Ctrl-C, SIGTERM, SIGHUP) is how a server is meant to end, not an interruption:
uvicorn stops accepting connections, answers every request it holds, then the app's lifespan
stops the engine, and `run` returns normally, so `textgen serve` exits with 0 and a process
manager sees a clean stop. A second Ctrl-C gives up on the draining. The handlers are installed
only while the server runs and the previous ones, and the interpreter's signal wake-up pipe
(textgen.cli.main.StopSignals notes signals there), are put back afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading

import uvicorn

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or an OSError naming what went wrong."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with stop signals that end it cleanly instead of being raised again afterwards."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only; whoever runs this thread stops it (should_exit)
            return
        wakeup = signal.set_wakeup_fd(-1)
        previous = {signum: signal.signal(signum, self._stop) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)  # as StopSignals set it

    def _stop(self, signum, frame) -> None:
        if self.should_exit and signum == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        self.should_exit = True


def serve(app, sock: socket.socket, *, verbose: bool = False) -> None:
    """Serve `app` on the listening `sock` until a stop signal; returns once in-flight requests are answered."""
    config = uvicorn.Config(app, log_level="info" if verbose else "warning", access_log=verbose,
                            timeout_graceful_shutdown=None, lifespan="on")
    DrainingServer(config).run(sockets=[sock])
