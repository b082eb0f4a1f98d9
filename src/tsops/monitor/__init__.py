"""Monitoring of served forecasts: how good they were, whether to act, and proposing the act.

What is read (``inputs``: the forecast log, the actuals) and which version is judged
(``served``); the checks: ``accuracy`` (realized error per version), ``canary``
(Diebold–Mariano verdict of two versions), ``drift`` (Evidently, on the features of
``drift_features``), ``staleness`` (ages of cutoffs and actuals), ``retrain`` (the
retraining policy); what is proposed: ``canary_change`` and ``retrain`` commit a
branch through ``tsops.core.git``; where numbers go: ``publish`` (MLflow,
Prometheus), ``plots`` and ``plots_forecasts``; ``cli`` holds the commands. Nothing
is imported or computed here, so importing the package costs nothing.
"""
