"""`understudy backtest`: what a FallbackPolicy would have done over a stretch of Prometheus history.

`replay` runs the engine's own `decide`, drills and governance over the history and summarises it (pure),
`cluster` is what it must assume about Deployments, `source` reads the history with the operator's batched
PromQL as range queries, `render` prints, serialises and plots the answer.
"""
