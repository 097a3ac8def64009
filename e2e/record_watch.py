"""`make record`: a terminal session of `kubectl understudy get --watch` through a failover, recorded with tmux.

Starts what `make demo` starts (control plane, Prometheus, three model servers, traffic, the operator),
runs `kubectl understudy get recommender --watch` in a detached tmux session of a fixed size, injects a
latency spike into the primary and then recovery, and captures the pane (`tmux capture-pane`) at each
stage: before, during the fallback, during the restore, after it, and after Ctrl-C. The frames go to
docs/recordings/get-watch.md, and the fallback frame, with `kubectl get fbp` beside it, into the README
between its recording markers. Everything started is stopped on the way out.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from e2e.demo import NAMESPACE, recommender
from e2e.harness.cluster import ControlPlane
from e2e.scenario import Scenario, wait_until

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "docs" / "recordings" / "get-watch.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- recording: kubectl understudy get --watch (make record) -->", "<!-- end of recording -->"
WIDTH, HEIGHT = 112, 30


class Tmux:
    """One detached tmux session on a private socket, running `command`; killed on exit."""

    def __init__(self, socket: Path, command: str, env: dict[str, str]) -> None:
        self.base = ["tmux", "-u", "-f", os.devnull, "-S", str(socket)]
        self.command, self.env = command, env

    def __enter__(self) -> Tmux:
        subprocess.run([*self.base, "new-session", "-d", "-s", "watch", "-x", str(WIDTH), "-y", str(HEIGHT),
                        self.command], env=self.env, check=True, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([*self.base, "kill-server"], env=self.env, capture_output=True, timeout=30)

    def capture(self) -> str:
        done = subprocess.run([*self.base, "capture-pane", "-p", "-t", "watch"], env=self.env, capture_output=True,
                              text=True, timeout=30)
        return "\n".join(line.rstrip() for line in done.stdout.rstrip().splitlines())

    def interrupt(self) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "watch", "C-c"], env=self.env, check=True, timeout=30)

    def wait_for(self, seen: Callable[[str], bool], what: str, timeout: float = 90.0) -> str:
        return str(wait_until(lambda: text if seen(text := self.capture()) else None, timeout, what, interval=0.5))


def record(sc: Scenario, cp: ControlPlane, workdir: Path) -> tuple[list[tuple[str, str]], str]:
    """The frames of one failover and back, and `kubectl get fbp` during the fallback."""
    env = {**cp.subprocess_env(), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("NO_COLOR", None)
    watch = f"kubectl understudy get recommender -n {NAMESPACE} --watch; echo \"exit status $?\"; sleep 600"
    frames: list[tuple[str, str]] = []
    with Tmux(workdir / "tmux.sock", watch, env) as tmux:
        frames.append(("Before: the primary serves all traffic", tmux.wait_for(
            lambda t: "primary 100%" in t and "ok" in t, "a first frame")))
        sc.inject("primary", latency_ms=2500)
        frames.append(("The primary's p99 latency breaches: traffic falls back to distilled", tmux.wait_for(
            lambda t: "distilled 100%" in t and re.search(r"breached\s+\d+ms\s+TierTripped", t) is not None,
            "the fallback with the value that tripped the primary")))
        listed = cp.run_kubectl("get", "fallbackpolicies", "-n", NAMESPACE).stdout.rstrip()
        sc.inject("primary")
        frames.append(("The primary recovers: the restore takes its first step", tmux.wait_for(
            lambda t: "Restore     to primary: step 1" in t, "a restore step")))
        frames.append(("Restored", tmux.wait_for(lambda t: "primary 100%" in t and "Restored" in t, "the restore")))
        tmux.interrupt()
        frames.append(("Ctrl-C ends the watch", tmux.wait_for(lambda t: "exit status" in t, "the exit")))
    return frames, listed


def write(frames: list[tuple[str, str]], listed: str) -> None:
    FRAMES.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"## {title}\n\n```\n{text}\n```\n\n" for title, text in frames)
    FRAMES.write_text("# `kubectl understudy get recommender --watch` through a failover\n\n"
                      f"Recorded by `make record` (e2e/record_watch.py): a {WIDTH}x{HEIGHT} tmux pane, captured "
                      "at each stage. On a terminal the plugin adds colour, which a capture does not keep.\n\n" + body)
    fallback = frames[1][1]
    block = (f"{BEGIN}\n```\n$ kubectl get fbp -n {NAMESPACE}\n{listed}\n\n"
             f"$ kubectl understudy get recommender -n {NAMESPACE} --watch\n{fallback}\n```\n{END}")
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + block + text[end:])


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argparse.ArgumentParser(description=__doc__).parse_args()
    with recommender("understudy-record-") as (cp, sc):
        sc.start_traffic(rate=30, duration=600)
        sc.start_operator()
        sc.apply_policy(sc.policy(evaluation={"recoverAfter": 5, "restoreSteps": [50, 100], "minDwell": "4s"}))
        frames, listed = record(sc, cp, sc.workdir)
    write(frames, listed)
    print(f"frames written to {FRAMES.relative_to(ROOT)}; the README's recording updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
