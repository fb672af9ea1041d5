"""A warm interpreter for the tests' runs of the package's console scripts.

Most of a failing ``hdrunet-*`` run's time is Python importing torch and Lightning (about
4 of 6 seconds on the 2-core machine), and the suite starts such runs well over a hundred
times. This process imports those libraries once, then starts each run as a fork of
itself that becomes the tool as a fresh process would be: its own folder, environment,
arguments, standard streams (files, not a terminal) and ``__main__`` (the console script
file itself, run by :mod:`runpy`), default random seeds, and whatever the imports printed
written first to its streams. The run ends as that script does (``sys.exit``, an uncaught
exception, a signal) and the interpreter exits with its status. The objects imported here
are frozen (``gc.freeze``): a fork's garbage collector would otherwise write to, and so
copy, every page of them (1.5 s at each run's exit).

A run is over when its process ends, as a shell sees it: ``subprocess.run`` waits, on top,
until every process that inherited the run's output pipes has closed them, which hid
worker processes that outlived a killed run by seconds (holding its folder's lock).

Protocol (one run at a time): a JSON request per line on stdin, ``{"script", "args",
"cwd", "env", "stdout", "stderr"}`` (the last two: files to write the streams to); the
reply, on the stdout this process had at start, is the run's pid, then its exit status
as :mod:`subprocess` gives it (negative: the signal that ended it), a line each.

What stays a plain subprocess (``run_tool(..., fresh=True)`` and ``tool="python"``):
whatever tests the interpreter's start itself, such as an installed script found from
any folder or what importing a module pulls in.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import tempfile

PRELOADED = (
    "torch",
    "lightning.pytorch",
    "hydra",
    "hdrunet_pl.cli",
    "hdrunet_pl.train",
    "hdrunet_pl.predict",
    "hdrunet_pl.evaluate",
    "hdrunet_pl.export",
    "hdrunet_pl.prepare",
    "hdrunet_pl.report",
)
"""What every tool imports (or most tools do), in the order a tool imports them."""


def _import_quietly() -> tuple[bytes, bytes]:
    """Imports :data:`PRELOADED` with the standard streams going to files (as in a run,
    not a terminal); returns what was written to stdout and stderr meanwhile."""
    import importlib

    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            for name in PRELOADED:
                importlib.import_module(name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
        out.seek(0)
        err.seek(0)
        return out.read(), err.read()


def _become(request: dict, printed: tuple[bytes, bytes]) -> None:
    """In the forked child: turn into the requested run of a console script (raises the
    run's SystemExit, or its uncaught exception, to the interpreter)."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # gettempdir() reads this run's TMPDIR
    streams = [os.open(os.devnull, os.O_RDONLY)]
    for name in ("stdout", "stderr"):
        streams.append(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    for fd, target in enumerate(streams):
        os.dup2(target, fd)
        os.close(target)
    os.write(1, printed[0])
    os.write(2, printed[1])

    import numpy
    import torch

    numpy.random.seed()  # a fresh process's seeds, not this server's
    torch.seed()
    script = request["script"]
    sys.argv = [script, *request["args"]]
    sys.path[0] = os.path.dirname(script)  # as for a script started by the interpreter
    runpy.run_path(script, run_name="__main__")
    sys.exit(0)


def main() -> None:
    reply = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # nothing else of this process may write into the replies
    printed = _import_quietly()
    gc.collect()
    gc.freeze()  # the forks' garbage collector leaves these objects alone: no copied pages
    while line := sys.stdin.readline():
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            reply.close()
            _become(request, printed)
        reply.write(f"{pid}\n")
        reply.flush()
        _, status = os.waitpid(pid, 0)
        reply.write(f"{os.waitstatus_to_exitcode(status)}\n")
        reply.flush()


if __name__ == "__main__":
    main()
