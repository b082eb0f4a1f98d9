"""The environment the containers get: secrets by reference only, and ``TSOPS_*``
variables that tsops reads.

Connection URLs of the data platform (the series database, the forecast log's database,
the feature registry, Redis) carry credentials. They reach a pod as ``secretKeyRef``
references to a Secret the cluster's operator creates; git holds no value
(:func:`check_secret_values`). tsops reads its environment through
:class:`tsops.core.settings.Settings`, which ignores a name it does not know, so a
misspelt ``TSOPS_FORCAST_LOG_URL`` would leave the server on its embedded default without
a word: every ``TSOPS_*`` variable a render sets is one that ``Settings`` reads, or one
that a container's command line expands as ``$(NAME)`` (:func:`check_tsops_variables`).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import containers_of, dig, located, pod_specs, resource_id

PREFIX = "TSOPS_"
SECRET_KIND = "Secret"
#: scheme://user:password@host: a URL with a password in it (``user@`` alone is no
#: secret, nor a placeholder such as ``redis://[[user]:password@]host`` or ``<password>``)
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@\[\]<>]*:[^/\s@\[\]<>]+@")
#: names whose value is a credential whatever it looks like
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIAL", re.I)
#: $(NAME) in a command line, which the kubelet expands from the container's environment
_EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

_FIX_REFERENCE = (
    "keep the value out of git: create the Secret in the cluster (`kubectl create secret "
    "generic tsops-data-platform --from-literal=<key>=<value>`, External Secrets, Sealed "
    "Secrets; manifests/README.md) and reference its key with env[].valueFrom.secretKeyRef"
)


def settings_variable(field: str) -> str:
    """The environment variable of :class:`~tsops.core.settings.Settings`' ``field``
    (``forecast_log_url`` -> ``TSOPS_FORECAST_LOG_URL``)."""
    from tsops.core.settings import Settings

    alias = Settings.model_fields[field].validation_alias
    prefix = str(Settings.model_config.get("env_prefix") or "")
    return alias if isinstance(alias, str) else f"{prefix}{field}".upper()


@functools.cache
def settings_variables() -> frozenset[str]:
    """Every environment variable :class:`~tsops.core.settings.Settings` reads."""
    from tsops.core.settings import Settings

    return frozenset(settings_variable(field) for field in Settings.model_fields)


def _containers(doc: dict) -> Iterator[tuple[str, dict]]:
    """(path, container) of every container a resource runs, KServe's ``model`` (the
    MLflow runtime) included."""
    for pod_path, pod in pod_specs(doc):
        for c_path, container in containers_of(pod):
            yield f"{pod_path}.{c_path}", container
        model = pod.get("model")
        if isinstance(model, dict):
            yield f"{pod_path}.model", model


def _credential(name: str, value: Any) -> str | None:
    """Why ``value`` (of variable or key ``name``) is a credential written in git, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    if _URL_PASSWORD.search(value):
        return "is a URL with a password in it"
    if _SECRET_NAME.search(name) and not _EXPANSION.fullmatch(value.strip()):
        return "names a credential and has a literal value"
    return None


def check_secret_values(doc: dict, where: str = "") -> list[Finding]:
    """No credential in git: no Secret with data (a secretGenerator or a Secret file),
    no password in a literal env value or a ConfigMap."""
    where = where or resource_id(doc)
    findings = []
    if doc.get("kind") == SECRET_KIND:
        keys = sorted({*(doc.get("data") or {}), *(doc.get("stringData") or {})})
        if keys:
            findings.append(
                Finding(
                    "secrets",
                    where,
                    f"a Secret with values in git ({', '.join(keys)}): whoever reads the "
                    "repository (or its history) reads them",
                    "delete it (and any secretGenerator entry) from the manifests; "
                    + _FIX_REFERENCE,
                )
            )
    if doc.get("kind") == "ConfigMap":
        for key, value in sorted((doc.get("data") or {}).items()):
            why = _credential(str(key), value)
            if why:
                findings.append(
                    Finding(
                        "secrets",
                        where,
                        f"data.{key} {why}; a ConfigMap is plain text in git and in the cluster",
                        f"remove {key} from the ConfigMap's source (e.g. settings.env); "
                        + _FIX_REFERENCE,
                    )
                )
    for path, container in _containers(doc):
        for i, env in enumerate(container.get("env") or []):
            if not isinstance(env, dict):
                continue
            why = _credential(str(env.get("name")), env.get("value"))
            if why:
                findings.append(
                    Finding(
                        "secrets",
                        where,
                        f"{path}.env[{i}] ({env.get('name')}) {why}",
                        f"replace value: by valueFrom.secretKeyRef; {_FIX_REFERENCE}",
                    )
                )
    return findings


def check_tsops_variables(
    docs: list[dict], label: str = "", sources: Callable[[dict], str] | None = None
) -> list[Finding]:
    """Every ``TSOPS_*`` variable a render gives a container (``env``, or the keys of a
    ConfigMap it reads with ``envFrom``) is read by ``Settings`` or expanded as
    ``$(NAME)`` in some container's command or args."""
    known = settings_variables()
    config_maps = {dig(d, "metadata", "name"): d for d in docs if d.get("kind") == "ConfigMap"}
    expanded: set[str] = set()
    given: dict[str, list[tuple[dict, str]]] = {}
    for doc in docs:
        for path, container in _containers(doc):
            for word in [*(container.get("command") or []), *(container.get("args") or [])]:
                expanded.update(_EXPANSION.findall(str(word)))
            for i, env in enumerate(container.get("env") or []):
                name = str((env or {}).get("name") or "")
                given.setdefault(name, []).append((doc, f"{path}.env[{i}]"))
            for source in container.get("envFrom") or []:
                name = dig(source, "configMapRef", "name")
                prefix = str((source or {}).get("prefix") or "")
                for key in (dig(config_maps.get(name), "data") or {}) if name else {}:
                    given.setdefault(prefix + str(key), []).append(
                        (doc, f"{path}.envFrom (ConfigMap {name})")
                    )
    findings = []
    for name, places in sorted(given.items()):
        if not name.startswith(PREFIX) or name in known or name in expanded:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        doc, path = places[0]
        where = located(label, doc) + (f" ({sources(doc)})" if sources else "")
        findings.append(
            Finding(
                "settings",
                where,
                f"{path} sets {name}, which tsops does not read (tsops.core.settings.Settings "
                "has no such variable) and no command line expands: it changes nothing",
                (f"did you mean {close[0]}? " if close else "")
                + "use a variable Settings reads (the table in src/tsops/core/settings.py), or "
                "expand it as $(" + name + ") in the container's args",
            )
        )
    return findings
