"""Prometheus signals: PromQL batched across every due policy (`promql`, pure) and the reader that sends it."""
