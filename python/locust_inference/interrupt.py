"""Ctrl-C reaches Locust's main greenlet, wherever the process is when it comes.

Python's own SIGINT handler raises KeyboardInterrupt in whatever code runs as the signal is handled. gevent
passes one raised in a greenlet on to the main greenlet, where Locust catches it and shuts down; but some of
Locust's own greenlets catch it and end quietly: the console stats printer, the stats history and the CSV
writer (each only logs it at debug level), and the greenlet spawning users, which calls ``runner.quit()`` from
inside itself and so is killed halfway through the stop. A Ctrl-C handled while one of them ran was lost: the
run went on to its run time as if no key had been pressed. So the signal is taken by gevent's loop instead (a
libev signal watcher, which runs between greenlets, never inside one) and raised in the main greenlet only,
as gevent raises a KeyboardInterrupt that reaches its loop.

A process started with SIGINT ignored (a job that a non-interactive shell starts with ``&``, whose Ctrl-C is
the script's to handle) keeps it ignored, as Python and Locust leave it; a handler someone else set (Locust's
own in the parent of ``--processes``) is left in place.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import gevent

__all__ = ["take_ctrl_c"]

_watchers: dict[int, Any] = {}  # this process's signal watcher, by pid (kept alive: dropping it stops it)


def take_ctrl_c() -> bool:
    """Routes SIGINT through gevent's loop to the main greenlet, once per process; returns whether it does. Left
    as it is when SIGINT is not Python's default handler or this thread's loop is not the default one."""
    if os.getpid() in _watchers:
        return True
    hub = gevent.get_hub()
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler or not hub.loop.default:
        return False

    def interrupt() -> None:
        # as gevent's loop does with a KeyboardInterrupt raised in it: into the main greenlet, no traceback printed
        hub.handle_system_error(KeyboardInterrupt, KeyboardInterrupt())

    _watchers[os.getpid()] = gevent.signal_handler(signal.SIGINT, interrupt)
    return True
