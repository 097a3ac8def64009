"""Simulated model tiers and traffic for end-to-end tests and benchmarks.

``model_server`` serves real scikit-learn models and reports Istio-shaped metrics; ``llm_server`` streams
tokens like an OpenAI-compatible chat completion and reports vLLM's metrics;
``traffic`` sends requests in the proportions a routing object in the API server asks for.
"""
