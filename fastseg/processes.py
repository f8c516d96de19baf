"""Starting worker processes (the sharder's pool, the torch loader's DataLoader workers) as a user's script expects.

A plain `torch.utils.data.DataLoader` on Linux forks its workers, so scripts, notebooks and code read from stdin need
no `if __name__ == "__main__":` guard; fastseg's workers do the same. Forking is unsafe only in a process that
already runs threads outside Python's view (DALI's thread pool, CUDA's, obstore's runtime): a fork copies only the forking thread, so
a lock that another thread held at that moment stays locked forever in the child, and the worker hangs. Such a
process starts its workers from a forkserver instead, without re-running the user's script in them.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from contextlib import contextmanager

# What forkserver workers run: imported by the server before it forks any (no effect once it runs)
FORKSERVER_PRELOAD = ("torch", "fastseg.loading.torch_backend", "fastseg.shards.encode")
_native_threads = False  # set once this process has built a DALI pipeline: its threads live as long as it does


def note_native_threads() -> None:
    """Called by code that starts threads Python does not know about (DALI's pipelines, obstore's runtime)."""
    global _native_threads
    _native_threads = True


def start_method() -> str:
    """'fork' in a process with only Python's threads; 'forkserver' once DALI or CUDA threads run in it."""
    torch = sys.modules.get("torch")  # not imported: CUDA cannot have been started by it
    cuda = torch is not None and torch.cuda.is_initialized()
    return "forkserver" if _native_threads or cuda else "fork"


@contextmanager
def workers_starting():
    """Wrap the start of worker processes (creating a Pool, or a DataLoader's first iterator).

    A forkserver child re-imports the main module by its file path before it unpickles its work, which runs an
    unguarded script a second time (and fails outright for code read from stdin). Workers need nothing from it
    (their work is fastseg's own functions and classes), so while they start, the main module does not name its
    file, exactly as under `python -c`. Nothing changes where workers are forked."""
    main = sys.modules.get("__main__")
    method = start_method()
    hide = method == "forkserver" and main is not None and getattr(main, "__spec__", None) is None
    path = main.__dict__.pop("__file__", None) if hide else None
    context = multiprocessing.get_context(method)
    if method == "forkserver":  # imported once, in the server, which forks every worker: not once per worker
        context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    try:
        yield context
    finally:
        if path is not None:
            main.__file__ = path


_ORPHAN_ERRORS = (ConnectionError, EOFError, BrokenPipeError)


def quiet_when_orphaned(worker_id: int = 0) -> None:
    """A worker's `worker_init_fn`: once the process that started it is gone (a rank killed by the OOM killer, say),
    the worker's helper threads fail on their closed connections; their tracebacks would bury the one line that says
    what happened (fastseg-train's). Such errors are dropped once the parent is gone; every other error is reported
    as it was."""
    parent, report = os.getppid(), sys.excepthook

    def hook(kind, error, trace):
        if issubclass(kind, _ORPHAN_ERRORS):
            deadline = time.monotonic() + 2.0  # the connection closes a moment before the kernel re-parents us
            while os.getppid() == parent and time.monotonic() < deadline:
                time.sleep(0.05)
            if os.getppid() != parent:
                return
        report(kind, error, trace)

    sys.excepthook = hook
