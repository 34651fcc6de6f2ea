"""Ctrl-C and SIGTERM for the command line: an interrupted run exits within seconds, with one
line that says how to resume, instead of minutes of Prefect retrying a server that is gone."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from bioimage_tasks.backends import clusters_open

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
UNWOUND = 0  # the byte the main thread sends the watcher once the interrupted run has unwound
CLUSTER_SHUTDOWN_SECONDS = 30.0  # how long an interrupted run may take to shut clusters down
PUSH_EVERY_SECONDS = 1.5  # how often the main thread is interrupted again until it has unwound
EXIT_AFTER_SECONDS = 4.0  # once no cluster is open, the process exits after this at the latest
RESUME = "rerun the same command to resume (finished blocks are skipped)"


class RunInterrupts:
    """Ends an interrupted run within seconds: SIGINT (Ctrl-C, sent by the terminal to the whole
    process group) or SIGTERM, to this process alone or to its group. It exits 130 or 143 with one
    line that says a rerun of the same command resumes.

    The signal still raises in the main thread (KeyboardInterrupt, or Prefect's and backends.py's
    SIGTERM exceptions), so the backend shuts its Dask cluster and SLURM jobs down. But the
    unwinding can take minutes: the thread runner waits for the batches in progress, and Prefect
    retries every report (run summary, events, the crash, then logs at exit) to the temporary
    server that the terminal's SIGINT stopped too. So a watcher thread, woken through
    `signal.set_wakeup_fd` whatever Python handler the signal meets, waits for any cluster
    shutdown in progress (backends.clusters_open), interrupts the main thread again every
    PUSH_EVERY_SECONDS until it has unwound, and exits the process itself once no cluster is
    open and the temporary server is gone (or after EXIT_AFTER_SECONDS): it stops that server,
    prints the line and calls os._exit. Work in flight is abandoned: a block is recorded as done
    only once its writes are complete, so the rerun redoes it. SLURM jobs are cancelled by
    backends.jobs_cancelled_on_exit's watcher when this process ends, and Dask's worker processes
    end with it too. A second signal exits at once."""

    def __init__(self, console: Any, debug: bool, before_exit: Callable[[], None] | None = None):
        self.console, self.debug, self.before_exit = console, debug, before_exit
        self.signum: int | None = None
        self.pushes_pending = 0
        self.writer: socket.socket | None = None

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Watch for SIGINT and SIGTERM while the run goes on (in the main thread; elsewhere,
        and where threads cannot be signalled, this does nothing)."""
        main = threading.current_thread() is threading.main_thread()
        if not main or not hasattr(signal, "pthread_kill"):
            yield
            return
        reader, self.writer = socket.socketpair()
        self.writer.setblocking(False)
        previous_fd = signal.set_wakeup_fd(self.writer.fileno(), warn_on_full_buffer=False)
        previous = {signum: signal.signal(signum, self.raise_interrupt) for signum in EXIT_CODES}
        threading.Thread(target=self.watch, args=(reader,), name="interrupts", daemon=True).start()
        try:
            yield
        except BaseException as error:  # an interrupted run ends here, whatever it raised
            if self.signum is not None or isinstance(error, KeyboardInterrupt):
                self.unwound()
            raise
        else:
            if self.signum is not None:  # a signal the flow swallowed
                self.unwound()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            self.writer.close()  # the watcher reads the end of the stream and stops

    def raise_interrupt(self, signum: int, frame: object) -> None:
        """The handler of SIGINT and SIGTERM (unless Prefect's or backends.py's replaces it)."""
        self.signum = self.signum or signum
        raise KeyboardInterrupt

    def unwound(self) -> None:
        """Tell the watcher that the interrupted run has unwound, and wait for it to exit."""
        with contextlib.suppress(OSError):
            self.writer.send(bytes([UNWOUND]))
        while True:
            with contextlib.suppress(BaseException):  # further signals and pushes change nothing
                time.sleep(60)

    def watch(self, reader: socket.socket) -> None:
        """The watcher thread: nothing until a signal, then the shutdown in RunInterrupts."""
        with reader:
            first = self.receive(reader, None)
            if first == UNWOUND and self.signum is None:  # the run ended without a signal
                return
            self.signum = self.signum or first or signal.SIGINT
            try:
                if not self.debug:  # Prefect's errors about the stopped server are no news
                    logging.disable(logging.CRITICAL)
                    logging.raiseExceptions = False  # else Prefect's log sender prints its failures
                if first != UNWOUND:
                    self.wait_for_main_thread(reader)
            finally:
                self.exit()

    def wait_for_main_thread(self, reader: socket.socket) -> None:
        """Return once the main thread has unwound, a second signal came, or waiting is useless:
        no cluster is shutting down and the temporary server is gone, or patience ran out."""
        give_up = time.monotonic() + CLUSTER_SHUTDOWN_SECONDS
        pushed = no_cluster_since = time.monotonic()
        while self.receive(reader, 0.2) is None:
            now = time.monotonic()
            opened, shutting_down = clusters_open()
            if opened and now < give_up:
                if not shutting_down and now - pushed >= PUSH_EVERY_SECONDS:
                    pushed = self.push()  # on to the backend's exit, which shuts them down
                no_cluster_since = now
                continue
            server = temporary_prefect_server()
            if server is not None and refuses_connections(server):
                return  # nothing can be reported any more
            if now - no_cluster_since >= EXIT_AFTER_SECONDS:
                return
            if now - pushed >= PUSH_EVERY_SECONDS:
                pushed = self.push()

    def push(self) -> float:
        """Interrupt the main thread again (a SIGINT to it alone); returns the time."""
        self.pushes_pending += 1
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return time.monotonic()

    def receive(self, reader: socket.socket, timeout: float | None) -> int | None:
        """The next SIGINT, SIGTERM or UNWOUND from the wakeup socket (UNWOUND at its end too);
        None after `timeout` seconds. The SIGINTs this watcher sent itself are skipped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reader.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.0))
            try:
                data = reader.recv(1)
            except OSError:  # the timeout
                return None
            if not data:  # the run ended: after a signal, the watcher then exits at once
                return UNWOUND
            if data[0] == signal.SIGINT and self.pushes_pending:
                self.pushes_pending -= 1
            elif data[0] in EXIT_CODES or data[0] == UNWOUND:
                return data[0]

    def exit(self) -> None:
        """Stop the temporary Prefect server, say how to resume, and end the process."""
        signum = self.signum or signal.SIGINT
        with contextlib.suppress(Exception):
            stop(getattr(temporary_prefect_server(), "server_process", None))
        if self.before_exit is not None:
            with contextlib.suppress(Exception):
                self.before_exit()
        with contextlib.suppress(Exception):
            line = f"interrupted by {signal.Signals(signum).name}: {RESUME}"
            self.console.print(line, highlight=False, soft_wrap=True)
            self.console.file.flush()
        os._exit(EXIT_CODES.get(signum, 130))


def temporary_prefect_server() -> Any:
    """The temporary Prefect server (a SubprocessASGIServer) this process started, if any. The
    terminal's SIGINT stops it too; and os._exit skips Prefect's own atexit stop."""
    if "prefect.server.api.server" not in sys.modules:
        return None
    from prefect.server.api.server import SubprocessASGIServer

    # The instance Prefect's client starts (port None), read without creating one.
    server = getattr(SubprocessASGIServer, "_instances", {}).get(None)
    return server if getattr(server, "server_process", None) is not None else None


def refuses_connections(server: Any) -> bool:
    """Whether the temporary server has exited or stopped listening: it stops listening as soon
    as it gets SIGINT or SIGTERM, seconds before it exits."""
    process = server.server_process
    if process is None or process.poll() is not None:
        return True
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()
    except OSError:
        return True
    return False


def stop(process: subprocess.Popen | None) -> None:
    """Terminate `process`, and kill it if still there after 2 s (a temporary server's database
    survives that). Not the server's own stop(): that forgets the instance, and a Prefect client
    in another thread would then start a new server."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
