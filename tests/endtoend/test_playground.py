"""The tutorial, run on the local playground as a newcomer would: `make cluster-up`, the operator, the example
policy, a slow primary, the fallback, the recovery, `make cluster-down`.

The commands are read from docs/tutorial.md: every sh block after a `<!-- playground -->` marker, in order.
`<!-- playground: operator -->` is the operator, started in the background and stopped by this test;
`<!-- playground: until TEXT -->` is repeated until its output shows TEXT. The only change made to the page's
commands: `.e2e/env` is the test's own state directory (UNDERSTUDY_STATE_DIR), so a playground a developer
started is never touched.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from e2e.harness.cluster import stop_pgroup

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
STEP = re.compile(r"<!-- playground(?:: (?P<kind>operator|until (?P<text>[^>]+?)))? -->\n```sh\n(?P<body>.*?)```",
                  re.DOTALL)


def steps() -> list[tuple[str, str, str]]:
    """(kind, until-text, commands) of each marked block: kind is "run", "operator" or "until"."""
    return [((m["kind"] or "run").split()[0], m["text"] or "", m["body"]) for m in STEP.finditer(TUTORIAL.read_text())]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_the_tutorial_runs_on_the_local_playground(tmp_path: Path) -> None:
    plan = steps()
    assert [kind for kind, _, _ in plan] == ["run", "operator", "run", "run", "until", "until", "run", "until",
                                             "run"], "the tutorial's playground steps changed: update this test"
    assert "make cluster-up" in plan[0][2] and "make cluster-down" in plan[-1][2]
    state = tmp_path / "state"
    env = {**os.environ, "UNDERSTUDY_STATE_DIR": str(state)}
    env.pop("KUBECONFIG", None)

    def bash(commands: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        script = commands.replace(". .e2e/env", '. "$UNDERSTUDY_STATE_DIR/env"')
        if (state / "env").exists():
            script = '. "$UNDERSTUDY_STATE_DIR/env"\n' + script
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)

    operator: subprocess.Popen[bytes] | None = None
    log = tmp_path / "operator.log"
    workdir = ""
    try:
        for kind, until, commands in plan[:-1]:
            if kind == "operator":
                with open(log, "wb") as out:
                    operator = subprocess.Popen(["bash", "-c", f'. "$UNDERSTUDY_STATE_DIR/env"\nexec {commands}'],
                                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)
                continue
            if not workdir and (state / "cluster.json").exists():
                workdir = json.loads((state / "cluster.json").read_text())["workdir"]
            deadline = time.monotonic() + (120 if kind == "until" else 900)
            while True:
                done = bash(commands)
                assert done.returncode == 0, f"{commands}\n{done.stdout}\n{done.stderr}\n{_text(log)}"
                if kind == "run" or until in done.stdout:
                    break
                assert operator is not None and operator.poll() is None, f"operator exited:\n{_text(log)}"
                assert time.monotonic() < deadline, f"no {until!r} in:\n{done.stdout}\n{_text(log)}"
                time.sleep(2)
    finally:
        if operator is not None:
            stop_pgroup(operator.pid)
        stop = bash(plan[-1][2], timeout=300)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not (state / "env").exists() and not (state / "cluster.json").exists()
    assert workdir, "make cluster-up recorded its cluster"
    assert processes_mentioning(workdir) == [] and processes_mentioning(str(state)) == [], (
        "make cluster-down leaves nothing running")


def _text(path: Path) -> str:
    """The operator's log so far; empty before the tutorial has started it."""
    return path.read_text() if path.exists() else "(the operator has not been started yet)"
