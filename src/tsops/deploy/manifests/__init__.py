"""Render and validate the Kubernetes manifests: ``tsops manifests validate``.

For every overlay under ``manifests/overlays/`` (also with each component of
``manifests/components/`` switched on, and with its image pins bumped) and for
``argocd/``, kustomize renders it and every check runs on the render. The checks are
pure functions of parsed documents returning :class:`~.report.Finding` objects;
:func:`~.validate.validate_all` does the rendering and the file I/O.

=====================  ==============================================================
``validate``           :func:`validate_all`: what is rendered, which check runs where
``cli``                ``tsops manifests validate`` (and ``python -m`` of this package)
``report``             ``Finding``, ``Report``, ``ManifestError`` (nothing validated)
``render``             ``kubectl kustomize``, a render of an edited copy, YAML reading
``resources``          reading a rendered resource: names, annotations, pod specs
``sources``            which files declare or patch a resource (named in findings)
``schemas``            strict schemas: Kubernetes' (kubernetes-validate) and the CRDs'
``policies``           canary, Splitter weights, model server, A/B volumes, references,
                       sync waves; ``policy_findings`` runs every per-render policy
``images``             exact image and model pins, digests, release annotations, the
                       batch pin, an image bump reaching what it should
``security``           the hardened pod spec
``environment``        secrets by reference only; ``TSOPS_*`` variables that Settings reads
``signatures``         the sigstore ClusterImagePolicy covering staging and production
``argocd``             Application sync policy, canary ownership, the AppProject
``kustomizations``     unused files, patches that hit nothing
``checkov``            checkov over the renders and the Dockerfile; skip annotations
=====================  ==============================================================

The pin names, digest form and release annotations the checks read are those the
GitOps commands write (:mod:`tsops.deploy.pins`, :mod:`tsops.deploy.overlays`).
"""
