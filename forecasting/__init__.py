"""The forecast runtime: bundle, retrieval store, maturity, the PIR revision service, replay and plots.

Torch-free (onnxruntime + numpy) and never imports training/: models, fitting and
export live in training/forecasting/; both sides read forecasting/contract.py.
"""
