"""`python -m e2e.harness up|down|status`: a control plane that outlives the command, for humans.

`up` starts the control plane and the playground beside it (the FallbackPolicy CRD, Prometheus, and unless
`--no-models` three model servers with traffic: e2e/playground.py), records PIDs and the workdir in
`.e2e/cluster.json` and writes `.e2e/env`; `down` stops exactly those processes. Tests start their own
cluster through the pytest plugin; one test runs this path as the tutorial does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from e2e.harness.cluster import (
    STATE_FILE,
    ControlPlaneError,
    Toolchain,
    detached_alive,
    down,
    iter_logs,
    read_state,
    up,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m e2e.harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a detached control plane and write .e2e/env")
    p_up.add_argument("--nodes", type=int, default=1, help="number of KWOK nodes (default 1)")
    p_up.add_argument("--no-playground", action="store_true", help="the control plane only")
    p_up.add_argument("--no-models", action="store_true", help="CRD and Prometheus, no model servers or traffic")
    sub.add_parser("down", help="stop the detached control plane")
    sub.add_parser("status", help="print the recorded control plane and whether it runs")
    args = parser.parse_args(argv)

    if args.command == "up":
        t0 = time.monotonic()
        try:
            state = up(nodes=args.nodes)
        except ControlPlaneError as err:
            print(f"control plane failed to start: {err}", file=sys.stderr)
            return 1
        if state.get("reused"):
            print(f"control plane already running at {state['server']} (workdir {state['workdir']})")
        else:
            print(f"control plane ready at {state['server']} in {time.monotonic() - t0:.1f}s")
            if not args.no_playground:
                try:
                    state = start_playground(state, models=not args.no_models)
                except ControlPlaneError as err:
                    down()
                    print(f"playground failed to start: {err}", file=sys.stderr)
                    return 1
                print(f"playground ready in {time.monotonic() - t0:.1f}s: FallbackPolicy CRD, Prometheus"
                      + ("" if args.no_models else ", model servers and traffic in namespace ml"))
        print(f"  kubeconfig: {state['kubeconfig']}")
        print(f"  logs:       {state['workdir']}/logs/")
        print(f"  env:        . {state['env_file']}")
        print("  stop with:  make cluster-down")
        return 0
    if args.command == "down":
        if down():
            print("control plane stopped")
        else:
            print("no control plane recorded in .e2e/; nothing to stop")
        return 0
    state = read_state()
    if not state:
        print("no control plane recorded")
        return 1
    alive = detached_alive(state)
    print(json.dumps({**state, "alive": alive}, indent=2))
    for log in iter_logs(Path(state["workdir"])):
        print(f"log: {log}")
    return 0 if alive else 1


def start_playground(state: dict[str, Any], models: bool) -> dict[str, Any]:
    """Start the playground beside the recorded cluster; its PID joins the record, so `down` stops it."""
    from e2e.playground import launch

    pid = launch(Path(state["workdir"]), Path(state["kubeconfig"]), Toolchain.from_cache().kubectl.parent,
                 Path(state["env_file"]), models)
    state = {**state, "pids": {**state["pids"], "playground": pid}}
    STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")
    return state


if __name__ == "__main__":
    sys.exit(main())
