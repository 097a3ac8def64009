"""The plugin's only contact with the API server: the user's kubeconfig, the user's RBAC, plain dicts out.

Reads are what the `view` role allows (the policy, the namespace's Deployments, the policy's Events);
the one write is a JSON merge patch of `spec.override`, sent as `kubectl-understudy` (the field manager the
API server records). A refusal is raised as `Refused` with the API server's own message.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from understudy.api.models import API_VERSION

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "fallbackpolicies"
FIELD_MANAGER = "kubectl-understudy"
TIMEOUT = 30.0
"""Seconds any single request may take."""
WATCH_SECONDS = 240
"""A watch is renewed this often (the API server ends it then), from the last resourceVersion seen."""


class Refused(Exception):
    """The API server refused, or could not be reached; the message is fit to print as it is."""


@dataclass(frozen=True)
class Cluster:
    api: Any
    namespace: str

    def get_policy(self, name: str) -> dict[str, Any]:
        return _call_for_dict(lambda: client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=TIMEOUT),
            f"fallbackpolicy {self.namespace}/{name}")

    def patch_override(self, name: str, override: Mapping[str, Any]) -> dict[str, Any]:
        """Merge `override` into spec.override (a None value removes that field)."""
        return _call_for_dict(lambda: client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"override": dict(override)}},
            field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json", _request_timeout=TIMEOUT),
            f"fallbackpolicy {self.namespace}/{name}")

    def whoami(self) -> str | None:
        """The user name the API server authenticated this kubeconfig as (a SelfSubjectReview), or None when
        the cluster cannot say."""
        body = client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        try:
            review = client.AuthenticationV1Api(self.api).create_self_subject_review(body, _request_timeout=TIMEOUT)
        except Exception:  # noqa: BLE001 - an older API server or a refusal: the name is simply not known
            return None
        user = getattr(getattr(review, "status", None), "user_info", None)
        return getattr(user, "username", None) or None

    def sources(self, name: str | None) -> dict[str, Source]:
        """The three lists a view needs, as watchable sources: policies (one, or all of the namespace), the
        namespace's Deployments, and the Events regarding FallbackPolicies (one, or all)."""
        custom, apps, events = client.CustomObjectsApi(self.api), client.AppsV1Api(self.api), client.EventsV1Api(
            self.api)
        regarding = "regarding.kind=FallbackPolicy" + (f",regarding.name={name}" if name else "")
        return {
            "policies": Source(custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL),
                               {"field_selector": f"metadata.name={name}"} if name else {}),
            "deployments": Source(apps.list_namespaced_deployment, (self.namespace,), {}),
            "events": Source(events.list_namespaced_event, (self.namespace,), {"field_selector": regarding}),
        }


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
    """A client as kubectl would build it: --kubeconfig, else KUBECONFIG, else ~/.kube/config; the namespace
    from -n, else the context's, else default."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or None  # read now: the library reads it at import
    try:
        api = config.new_client_from_config(config_file=path, context=context)  # type: ignore[no-untyped-call]
        if namespace is None:
            contexts, active = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
            namespace = ((chosen or {}).get("context") or {}).get("namespace")
    except (ConfigException, OSError) as error:
        raise Refused(f"no usable kubeconfig: {error}") from None
    return Cluster(api, namespace or "default")


def _call(request: Callable[[], Any], what: str) -> Any:
    try:
        return request()
    except ApiException as error:
        raise Refused(_refusal(error, what)) from None
    except Exception as error:  # noqa: BLE001 - connection refused, TLS, timeout: say so, without a traceback
        raise Refused(f"cannot reach the API server: {error}") from None


def _call_for_dict(request: Callable[[], Any], what: str) -> dict[str, Any]:
    """A custom object as the client returns it: a dict."""
    return dict(_call(request, what))


def _refusal(error: ApiException, what: str) -> str:
    """The API server's own sentence (its Status message), e.g. '... is forbidden: User "bob" cannot patch
    resource "fallbackpolicies" ...'."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    if error.status == 404:
        return f"{what} not found"
    return f"the API server refused ({error.status} {error.reason}): {message or error.body or 'no reason given'}"


@dataclass
class Source:
    """One list of objects, kept current by a watch on a thread of its own (`follow`)."""

    call: Callable[..., Any]
    args: tuple[Any, ...]
    selectors: dict[str, str]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    listed: bool = False
    error: str | None = None
    _watch: Any = None
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def relist(self) -> str:
        """Read the whole list once; returns its resourceVersion."""
        response = _call(lambda: self.call(*self.args, **self.selectors, _preload_content=False,
                                           _request_timeout=TIMEOUT), "the list")
        data = json.loads(response.data)
        with self._lock:
            self.items = {_key(o): o for o in data.get("items") or []}
            self.listed, self.error = True, None
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.items.values())

    def follow(self, changes: queue.Queue[str], name: str) -> None:
        """List, then watch from that resourceVersion, renewing the watch; after an error (a 410 Gone, a
        dropped connection) list again after a pause. Every change is put on `changes` as `name`."""
        pause = 1.0
        while not self._stopped:
            try:
                version = self.relist()
                changes.put(name)
                while not self._stopped:
                    self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                    for event in self._watch.stream(self.call, *self.args, **self.selectors, resource_version=version,
                                                    timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True,
                                                    deserialize=False, _request_timeout=WATCH_SECONDS + TIMEOUT):
                        if self._apply(event):
                            changes.put(name)
                        pause = 1.0
                    version = self._watch.resource_version or version
            except Exception as error:  # noqa: BLE001 - say it on screen and try again; never a traceback
                if self._stopped:
                    return
                with self._lock:
                    self.error = str(error)
                changes.put(name)
                time.sleep(pause)
                pause = min(pause * 2, 30.0)

    def _apply(self, event: Mapping[str, Any]) -> bool:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise Refused(f"the watch ended: {obj.get('message') or obj}")
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return False  # BOOKMARK: only the resourceVersion moves, which the Watch keeps
        with self._lock:
            if kind == "DELETED":
                self.items.pop(_key(obj), None)
            else:
                self.items[_key(obj)] = obj
        return True

    def stop(self) -> None:
        self._stopped = True
        if self._watch is not None:
            self._watch.stop()


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name"))
