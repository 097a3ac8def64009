"""`understudy report`: how a FallbackPolicy has fared, from its status and from Prometheus.

`assemble` is pure (status, spec and query answers in, figures out) so its arithmetic is tested without a
cluster; `command` does the reading, `render` the table and JSON.
"""
