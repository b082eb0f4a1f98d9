"""``tsops manifests validate`` (also ``python -m tsops.deploy.manifests validate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsops.core.errors import reports_errors
from tsops.deploy.manifests.schemas import CRDS_ENV, DEFAULT_CRDS, KUBERNETES_VERSION

manifests_app = typer.Typer(
    help="Render and validate the Kubernetes manifests (manifests/, argocd/).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# A callback keeps ``validate`` a subcommand when the app runs on its own (Typer
# collapses a one-command app into that command).
@manifests_app.callback()
def _manifests() -> None:
    """Render and validate the Kubernetes manifests (manifests/, argocd/)."""


@manifests_app.command("validate")
@reports_errors
def validate_cmd(
    crds: Annotated[
        Path | None,
        typer.Option(
            "--crds",
            help="directory with the CRDs to validate custom resources against "
            f"(default: ${CRDS_ENV}, else <root>/{DEFAULT_CRDS}, the vendored upstream CRDs)",
        ),
    ] = None,
    root: Annotated[Path, typer.Option("--root", help="repository root")] = Path("."),
    k8s_version: Annotated[
        str, typer.Option("--kubernetes-version", help="Kubernetes schemas to validate against")
    ] = KUBERNETES_VERSION,
    checkov: Annotated[
        bool, typer.Option("--checkov/--no-checkov", help="also run checkov (slower)")
    ] = True,
) -> None:
    """Render every overlay and argocd/, validate schemas strictly, check the policies."""
    # exit 1: the manifests have problems; 2 (ManifestError): nothing could be validated
    from tsops.core.settings import load_settings
    from tsops.deploy.manifests.validate import validate_all

    settings = load_settings()
    report = validate_all(
        root,
        crds or settings.crds_dir or root / DEFAULT_CRDS,
        k8s_version=k8s_version,
        checkov=checkov,
        checkov_command=settings.checkov,
    )
    for finding in report.findings:
        typer.echo(f"FAIL {finding}")
    typer.echo(report.summary(), err=not report.ok)
    if not report.ok:
        raise typer.Exit(1)
