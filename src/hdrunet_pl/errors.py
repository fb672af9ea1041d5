"""The package's exception types: each names the file or value at fault and how to fix it."""

from __future__ import annotations

from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException


class HDRUNetError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(HDRUNetError, RuntimeError):
    """A checkpoint file that cannot be turned into an HDRUNet."""


class ImageFileError(HDRUNetError, ValueError):
    """An image or align-ratio file that is missing, unreadable or not what it should be."""


INTERRUPTED_STATUS = 130
"""Exit status after Ctrl-C (the shell's: 128 + SIGINT)."""

ERROR_STATUS = 2
"""Exit status of every tool for a one-line error (a bad setting, path or file), as argparse's."""


class DatasetError(HDRUNetError, ValueError):
    """A data set that cannot be used as configured (empty, unpaired, too small, ...)."""

    MAX_LISTED = 20

    @classmethod
    def check(cls, where: object, problems: list[str]) -> None:
        """Raise one error listing (up to 20 of) ``problems`` found in ``where``, if any."""
        if not problems:
            return
        listed = "\n  ".join(sorted(problems)[: cls.MAX_LISTED])
        more = len(problems) - cls.MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise cls(f"{where}: {len(problems)} problem(s):\n  {listed}{tail}")


PATH_KEYS = frozenset(
    {"input", "output", "ckpt", "run", "pred_dir", "gt_dir", "ldr_dir", "ckpt_path", "dir"}
    | {"init_weights", "root", "val_root", "input_dir", "cache_dir", "log_dir", "output_dir"}
)
"""Settings (the last part of their key) whose values are paths, where a ``${`` may be part
of a file's name rather than a reference to another setting."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` for a one-line report.

    An error re-raised from a DataLoader worker carries the worker's whole traceback in its
    message; only its last line, the original message, is kept. An OmegaConf error (e.g. an
    unresolvable ``${...}`` in a path) gives its message and the setting it is in.
    """
    if isinstance(err, OmegaConfBaseException) and str(err).strip():
        message = str(err).strip().splitlines()[0]  # then lines naming the key and type
        key = getattr(err, "full_key", None)
        path = str(key).rpartition(".")[2] in PATH_KEYS
        if path and isinstance(err, InterpolationKeyError):  # a "${" in a file's name?
            return (
                f"{message} (in {key}: a ${{...}} in a value names another setting; for the "
                f"characters themselves write \\${{ inside Hydra's quotes: "
                f"'{key}=\"a\\${{b}}\"')"
            )
        return f"{message} (in {key})" if key else message
    text = str(err)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
