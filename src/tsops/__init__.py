"""tsops: GitOps continuous training and online inference for time-series forecasting models."""

__version__ = "0.1.0"
