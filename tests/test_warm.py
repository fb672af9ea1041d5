"""The warm interpreter that starts the tests' tool runs (tests/warm.py) runs them as a
fresh process would: what a run sees, and what the test gets back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .support import WarmInterpreter, run_tool, tool_environment

FACTS = """\
import json, os, sys, tempfile
import __main__, torch
print(json.dumps({
    "cwd": os.getcwd(), "argv": sys.argv, "mark": os.environ.get("HDRUNET_TEST_MARK"),
    "tmp": tempfile.gettempdir(), "main": __main__.__file__, "spec": __main__.__spec__,
    "path0": sys.path[0], "seed": torch.initial_seed(), "stdin": sys.stdin.read(),
    "pid": os.getpid(),
}))
print("to stderr\\r\\nand a progress bar\\rend", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def warm():
    interpreter = WarmInterpreter()
    yield interpreter
    interpreter.close()


def test_a_run_sees_its_own_folder_arguments_environment_and_seeds(warm, tmp_path):
    script = tmp_path / "bin" / "facts"
    script.parent.mkdir()
    script.write_text(FACTS)
    (tmp_path / "tmp").mkdir()
    env = tool_environment({"HDRUNET_TEST_MARK": "yes", "TMPDIR": str(tmp_path / "tmp")})
    runs = [warm.run([str(script), str(code)], tmp_path, env, timeout=60) for code in (0, 3)]
    assert [run.returncode for run in runs] == [0, 3]
    facts = [json.loads(run.stdout) for run in runs]
    for seen in facts:
        assert seen["cwd"] == str(tmp_path)
        assert seen["mark"] == "yes"
        assert seen["tmp"] == str(tmp_path / "tmp")
        assert seen["main"] == seen["argv"][0] == str(script)
        assert seen["spec"] is None  # as for a script: Lightning's DDP restarts it by path
        assert seen["path0"] == str(script.parent)
        assert seen["stdin"] == ""
    assert facts[0]["pid"] != facts[1]["pid"]
    assert facts[0]["seed"] != facts[1]["seed"]  # not the server's seeds, copied
    # decoded as subprocess.run(text=True) decodes: universal newlines
    assert runs[0].stderr.endswith("to stderr\nand a progress bar\nend\n")


def test_a_killed_or_overdue_run_reads_as_subprocess_reports_it(warm, tmp_path):
    script = tmp_path / "sleeper"
    script.write_text("import os, signal, sys, time\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = tool_environment()
    assert warm.run([str(script)], tmp_path, env, timeout=60).returncode == -9
    script.write_text("import time\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([str(script)], tmp_path, env, timeout=1)
    script.write_text("raise SystemExit('a message')\n")  # and it goes on after both
    done = warm.run([str(script)], tmp_path, env, timeout=60)
    assert (done.returncode, done.stderr) == (1, "a message\n")


@pytest.mark.parametrize(
    "args",
    [
        ["model.nf=-3"],  # refused by the CLI's own checks
        ["ckpt=missing.ckpt", "input=.", "output=out"],  # refused by the tool's checks
    ],
    ids=["setting", "checkpoint"],
)
def test_a_tool_run_reads_the_same_warm_or_fresh(tmp_path, args):
    warm = run_tool("hdrunet-predict", args, tmp_path)
    fresh = run_tool("hdrunet-predict", args, tmp_path, fresh=True)
    assert warm.returncode == fresh.returncode == 2
    assert (warm.stdout, warm.stderr) == (fresh.stdout, fresh.stderr)
    assert warm.stderr.startswith("hdrunet-predict: error: ")
    assert Path(warm.args[0]).name == "hdrunet-predict" and warm.args[0] == fresh.args[0]
    assert Path(warm.args[0]).parent == Path(sys.executable).parent
