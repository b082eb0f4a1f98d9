"""Deploying: the GitOps edits of the overlays and the manifest linter.

Argo CD applies what git holds, so deploying is editing files under ``manifests/``.

=================  ==================================================================
``cli``            ``tsops release``, ``promote``, ``canary``, ``ab``, ``rollback``,
                   ``sync-champion``, ``reviewed``
``gitops``         the edits of each command, computed first and written at once
``served``         what an overlay serves: release, canary share, the release before
``pins``           image pins (``images:`` entries) and image references (``Pin``)
``overlays``       where the overlays are, their annotations, round-trip YAML, the
                   ``GitOpsError`` that always means no file changed
``manifests/``     ``tsops manifests validate``: render every overlay and check it
                   (its ``__init__`` is the map of the linter)
=================  ==================================================================
"""
