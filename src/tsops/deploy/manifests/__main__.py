"""``python -m tsops.deploy.manifests validate ...``: the same as ``tsops manifests``."""

from tsops.deploy.manifests.cli import manifests_app

manifests_app(prog_name="tsops manifests")
