"""`kubectl understudy`: the command line (installed as the `kubectl-understudy` console script, which kubectl
finds on PATH as a plugin).

Exit status: 0 when done; 1 when the API server refused or could not be reached, the policy is missing, or
there is nothing to approve; 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from understudy.engine import RestoreApproval
from understudy.kubectl import render, view
from understudy.kubectl.client import Cluster, Refused, Source, connect
from understudy.kubectl.explain import explain

Frame = Callable[[dict[str, Source], float], str]
"""Text for the current contents of the sources, at a time."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="the policy's namespace (default: the context's)")
    common.add_argument("--context", help="the kubeconfig context to use")
    common.add_argument("--kubeconfig", help="the kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
    parser = argparse.ArgumentParser(
        prog="kubectl understudy",
        description="See a FallbackPolicy live, explain its decision, and take the wheel during an incident. "
                    "Reads the policy, its Deployments and Events and writes only spec.override, with your own "
                    "kubeconfig and RBAC.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = commands.add_parser("get", parents=[common], help="the policy as a tree: tiers, triggers, creep, moves")
    get.add_argument("name", nargs="?", metavar="NAME", help="the FallbackPolicy (default: every one of the namespace)")
    get.add_argument("-w", "--watch", action="store_true", help="redraw as the policy changes, until Ctrl-C")
    get.add_argument("-o", "--output", choices=("text", "json"), default="text")
    get.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                     help="colour and symbols (default: on a terminal, unless NO_COLOR is set)")
    get.set_defaults(func=run_get)
    for name, text in (("explain", "the last decision in sentences, and what must happen for traffic to return"),
                       ("history", "the transitions of status.history and the Events, merged, with observed values")):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("name", metavar="NAME")
        if name == "history":
            sub.add_argument("-o", "--output", choices=("text", "json"), default="text")
        sub.set_defaults(func=run_explain if name == "explain" else run_history)
    pin = commands.add_parser("pin", parents=[common], help="send all traffic to TIER whatever the triggers say")
    pin.add_argument("name", metavar="NAME")
    pin.add_argument("tier", metavar="TIER", help='"primary" or a fallback\'s name')
    pin.set_defaults(func=run_override, change=lambda a: {"pinTier": a.tier},
                     done=lambda a: f"pinned to {a.tier}: the operator moves all traffic there at its next evaluation")
    for name, change, done, text in (
            ("unpin", {"pinTier": None}, "unpinned: the triggers decide again", "hand routing back to the triggers"),
            ("pause", {"paused": True}, "paused: routing stays as it is and no Deployment is changed",
             "freeze the routing and every change to Deployments"),
            ("resume", {"paused": None}, "resumed: the triggers decide again", "end a pause")):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("name", metavar="NAME")
        sub.set_defaults(func=run_override, change=lambda a, c=change: c, done=lambda a, d=done: d)
    approve = commands.add_parser("approve", parents=[common],
                                  help="release the restore held for approval (evaluation.restoreApproval Manual)")
    approve.add_argument("name", metavar="NAME")
    approve.set_defaults(func=run_approve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cluster = connect(args.kubeconfig, args.context, args.namespace)
        status: int = args.func(args, cluster, sys.stdout)
    except Refused as refusal:
        print(f"kubectl understudy: {refusal}", file=sys.stderr)
        return 1
    return status


# ---- reading ----------------------------------------------------------------------------------------------


Objects = tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]]]
"""The policies (by name), the Deployments (by their name) and the Events a view is built from."""


def snapshot(sources: dict[str, Source]) -> Objects:
    policies = sorted(sources["policies"].snapshot(), key=lambda o: str((o.get("metadata") or {}).get("name")))
    deployments = {str((d.get("metadata") or {}).get("name")): d for d in sources["deployments"].snapshot()}
    return policies, deployments, sources["events"].snapshot()


def views(sources: dict[str, Source], now: float) -> list[view.PolicyView | str]:
    """A view per policy, or the sentence saying why one cannot be built."""
    policies, deployments, events = snapshot(sources)
    out: list[view.PolicyView | str] = []
    for obj in policies:
        name = str((obj.get("metadata") or {}).get("name"))
        mine = [e for e in events if (e.get("regarding") or {}).get("name") == name]
        try:
            out.append(view.build(obj, deployments, mine, now))
        except view.PolicyUnreadable as error:
            out.append(f"FallbackPolicy {obj['metadata'].get('namespace')}/{name}: its spec is not valid: {error}\n")
    return out


def text_frame(cluster: Cluster, name: str | None, style: render.Style) -> Frame:
    def frame(sources: dict[str, Source], now: float) -> str:
        errors = [f"({kind}: {s.error}; retrying)\n" for kind, s in sources.items() if s.error]
        built = views(sources, now)
        if not built:
            missing = f"fallbackpolicy {cluster.namespace}/{name} not found" if name else \
                f"no FallbackPolicy in namespace {cluster.namespace}"
            return missing + "\n" + "".join(errors)
        return "\n".join(v if isinstance(v, str) else render.get(v, now, style) for v in built) + "".join(errors)
    return frame


def json_frame(name: str | None) -> Frame:
    def frame(sources: dict[str, Source], now: float) -> str:
        built = [render.to_json(v) if isinstance(v, view.PolicyView) else {"error": v.strip()}
                 for v in views(sources, now)]
        if name and not built:
            raise Refused(f"fallbackpolicy {name} not found")
        return json.dumps(built[0] if name else built, indent=2) + "\n"
    return frame


def style_for(choice: str, out: TextIO) -> render.Style:
    if choice == "always" or choice == "auto" and out.isatty() and not os.environ.get("NO_COLOR") \
            and os.environ.get("TERM") != "dumb":
        return render.TERMINAL
    return render.PLAIN


# ---- commands ---------------------------------------------------------------------------------------------


def run_get(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    frame = json_frame(args.name) if args.output == "json" else text_frame(
        cluster, args.name, style_for(args.color, out))
    sources = cluster.sources(args.name)
    if args.watch:
        return follow(sources, frame, out)
    for source in sources.values():
        source.relist()
    if args.name and not sources["policies"].snapshot():
        raise Refused(f"fallbackpolicy {cluster.namespace}/{args.name} not found")
    out.write(frame(sources, time.time()))
    return 0


def run_explain(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    obj, deployments, events = read_one(cluster, args.name)
    now = time.time()
    out.write(explain(build_or_refuse(obj, deployments, events, now), now))
    return 0


def run_history(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    obj, deployments, events = read_one(cluster, args.name)
    shown = build_or_refuse(obj, deployments, events, time.time())
    if args.output == "json":
        json.dump([render.entry_json(e) for e in shown.transitions], out, indent=2)
        out.write("\n")
    else:
        out.write(render.history(shown))
    return 0


def run_override(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    change = dict(args.change(args))
    change["by"] = cluster.whoami()  # None removes a name left by someone else's earlier override
    updated = cluster.patch_override(args.name, change)
    by = f" (by {change['by']})" if change["by"] else ""
    out.write(f"fallbackpolicy {cluster.namespace}/{args.name} {args.done(args)}{by}\n")
    for warning in override_warnings(updated):
        out.write(f"note: {warning}\n")
    return 0


def run_approve(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    tier, approved_at = held_restore(cluster.get_policy(args.name))
    by = cluster.whoami()
    updated = cluster.patch_override(args.name, {"restoreApprovedAt": approved_at, "by": by})
    who = f" (by {by})" if by else ""
    out.write(f"fallbackpolicy {cluster.namespace}/{args.name}: approved the restore to {tier} held since "
              f"{approved_at}{who}; the operator starts it at its next evaluation\n")
    for warning in override_warnings(updated):
        out.write(f"note: {warning}\n")
    return 0


def held_restore(obj: dict[str, Any]) -> tuple[str, str]:
    """The tier of the restore held for approval, and the approval to write: the moment it was held, to the
    second, so that it releases this hold and no later one."""
    meta = obj.get("metadata") or {}
    ref = f"fallbackpolicy {meta.get('namespace')}/{meta.get('name')}"
    spec, _ = view.engine_policy(obj.get("spec") or {})
    if spec.evaluation.restore_approval is not RestoreApproval.MANUAL:
        raise Refused(f"{ref} restores on its own (evaluation.restoreApproval is Automatic): there is nothing to "
                      f"approve")
    held = ((obj.get("status") or {}).get("engine") or {}).get("restoreHeld") or {}
    since, tier = held.get("sinceMs"), held.get("tier")
    if not isinstance(since, int) or isinstance(since, bool) or not isinstance(tier, str):
        raise Refused(f"no restore of {ref} is waiting for approval (kubectl understudy get {meta.get('name')} -n "
                      f"{meta.get('namespace')} shows where it stands)")
    return tier, render.at(since / 1000)


def read_one(cluster: Cluster, name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    sources = cluster.sources(name)
    for source in sources.values():
        source.relist()
    policies, deployments, events = snapshot(sources)
    if not policies:
        raise Refused(f"fallbackpolicy {cluster.namespace}/{name} not found")
    return policies[0], deployments, events


def build_or_refuse(obj: dict[str, Any], deployments: dict[str, dict[str, Any]], events: list[dict[str, Any]],
                    now: float) -> view.PolicyView:
    try:
        return view.build(obj, deployments, events, now)
    except view.PolicyUnreadable as error:
        raise Refused(f"the spec of fallbackpolicy {obj['metadata'].get('name')} is not valid: {error}") from None


def override_warnings(obj: dict[str, Any]) -> list[str]:
    """What keeps a written override from acting at once."""
    spec = obj.get("spec") or {}
    override = spec.get("override") or {}
    notes = []
    if spec.get("mode") == "Observe":
        notes.append("mode is Observe: the operator decides and audits but changes no routing")
    if override.get("paused") and (override.get("pinTier") or override.get("restoreApprovedAt")):
        notes.append("the policy is paused: the pin or approval takes effect once it is resumed")
    if ((obj.get("status") or {}).get("engine") or {}).get("frozen") and override.get("restoreApprovedAt"):
        notes.append("creep.action Freeze holds routing: the restore starts once the freeze ends")
    return notes


# ---- watching ---------------------------------------------------------------------------------------------


def follow(sources: dict[str, Source], frame: Frame, out: TextIO) -> int:
    """Watch the sources and draw a frame whenever they change, until Ctrl-C (then exit 0).

    On a terminal the frame is redrawn in place (and its ages refreshed every second); piped, each new
    frame is written after the previous one, only when its text changed.
    """
    changes: queue.Queue[str] = queue.Queue()
    threads = [threading.Thread(target=s.follow, args=(changes, kind), daemon=True, name=f"watch-{kind}")
               for kind, s in sources.items()]
    terminal = out.isatty()
    last = ""
    try:
        for thread in threads:
            thread.start()
        if terminal:
            out.write("\x1b[?25l\x1b[2J")
        while True:
            try:
                changes.get(timeout=1.0)
            except queue.Empty:
                if not terminal:
                    continue
            while not changes.empty():
                changes.get_nowait()
            if not all(s.listed or s.error for s in sources.values()):
                continue
            text = frame(sources, time.time())
            if text == last:
                continue
            last = text
            if terminal:
                rows = shutil.get_terminal_size().lines - 1
                out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in text.splitlines()[:rows]) + "\x1b[J")
            else:
                out.write(text + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        for source in sources.values():
            source.stop()
        if terminal:
            out.write("\x1b[?25h")
        out.flush()
    return 0
