"""`understudy backtest`: what a FallbackPolicy would have done over a stretch of Prometheus history.

`replay` runs the engine's own `decide` over Samples and summarises it (pure), `source` reads the history
with the operator's batched PromQL as range queries, `render` prints, serialises and plots the answer.
"""
