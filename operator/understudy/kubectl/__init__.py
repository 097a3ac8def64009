"""`kubectl understudy`: a kubectl plugin to see a FallbackPolicy live, explain its decision, and take the wheel.

It reads what any user with `view` on the namespace may read (the policy's spec and status, the tiers'
Deployments, the policy's Events) and writes only `spec.override`, with the user's own kubeconfig, so the
API server applies that user's RBAC and audits the write. Everything between the API objects and the text
is pure (`view`, `timeline`, `render`, `explain`: objects and a time in, text out); `client` is the thin
layer that talks to the API server and `command` the command line.
"""
