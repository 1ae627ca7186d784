"""The examples, run as their users run them: a script written for TransferQueue's API,
against the embedded default and against real daemons."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "rl_pipeline.py")


@pytest.mark.parametrize("where", ["embedded", "daemons"])
def test_rl_pipeline(where, torch, request):
    env = dict(os.environ)
    env.pop("TQ_CONTROLLER", None)
    if where == "daemons":
        env["TQ_CONTROLLER"] = request.getfixturevalue("cluster").address
    done = subprocess.run([sys.executable, EXAMPLE], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "trained on 32 samples" in done.stdout
