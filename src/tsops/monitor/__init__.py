"""Monitoring of served forecasts: realized accuracy per model version, canary verdicts.

``accuracy`` joins the forecast log the model server writes with the actuals once
they arrive; ``canary`` compares two versions served side by side on the same
series and target times; ``cli`` holds the ``tsops monitor`` commands. Nothing is
imported or computed here, so importing the package costs nothing.
"""
