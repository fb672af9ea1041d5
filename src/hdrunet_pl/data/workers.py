"""DataLoader worker processes that leave a job's signals to the run they serve.

A scheduler often signals every process of a job, not only the main one: SLURM sends
SIGTERM to all of them at a time limit and the ``--signal`` signal (SIGUSR1 for Lightning's
requeue) to all of them before it. PyTorch's workers die of either (its SIGTERM handler
re-raises any SIGTERM that does not come from the parent; SIGUSR1's default action ends a
process), and the run then fails on "DataLoader worker ... killed by signal" before it can
save; under SLURM a forked worker would even run Lightning's requeue handler on its stale
copy of the trainer. The run's own process decides: it saves, stops and ends its workers.
"""

from __future__ import annotations

import os
import signal
import threading

from lightning.fabric.utilities.seed import pl_worker_init_function

from hdrunet_pl.runtime import end_with_parent

IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
"""Requeue and pre-emption requests (SLURM ``--signal``, Lightning's requeue signal) and
Ctrl-C, which a terminal sends to every process of the command: meant for the run's
process (which saves and stops, then ends its workers), never for a worker."""


def _end_when_the_parent_asks(parent: int) -> None:
    """Wait for SIGTERM (blocked in every thread) and end the worker only when it comes from
    the parent, which is how the DataLoader stops a worker that does not stop by itself, or
    when the parent has ended (the kernel's SIGTERM, :func:`end_with_parent`)."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent or os.getppid() != parent:
            os._exit(0)


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the package's DataLoaders: the job's signals reach the run's
    process only (see the module docstring), and workers are seeded as Lightning seeds
    them (``seed_everything(workers=True)``; Lightning adds its own seeding only to loaders
    without a ``worker_init_fn``)."""
    for signum in IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # blocked before any thread of this worker starts, so that every thread inherits it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    parent = os.getppid()
    threading.Thread(
        target=_end_when_the_parent_asks, args=(parent,), name="sigterm", daemon=True
    ).start()
    # a run killed outright (SIGKILL, the OOM killer) takes its workers along at once: left
    # to PyTorch's check of the parent (every 5 s), they held its folder's lock meanwhile
    end_with_parent(parent)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        pl_worker_init_function(worker_id)
