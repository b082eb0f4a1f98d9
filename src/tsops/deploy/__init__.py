"""Deploying: the GitOps edits of the overlays and the manifest linter.

Argo CD applies what git holds, so deploying is editing files under ``manifests/``.

=================  ==================================================================
``cli``            ``tsops release``, ``promote``, ``canary``, ``ab``, ``rollback``,
                   ``bluegreen``, ``shadow``, ``sync-champion``, ``reviewed``
``gitops``         the edits of each command, computed first and written at once
``strategies``     the strategies git runs in an environment (``live_strategies``) and
                   the Splitter weights edit (``weights_edits``), for monitoring and the
                   bandit
``bluegreen``      blue/green: pin the idle colour, switch, end
``shadow``         a shadow release: start, stop
``arms``           the InferenceServices strategies add (candidate, third, green,
                   shadow): pins, release patches, the --shadow_url mirrors
``served``         what an overlay serves: release, canary share, the release before
``pins``           image pins (``images:`` entries) and image references (``Pin``)
``overlays``       where the overlays are, their annotations, round-trip YAML, the
                   ``GitOpsError`` that always means no file changed
``manifests/``     ``tsops manifests validate``: render every overlay and check it
                   (its ``__init__`` is the map of the linter)
=================  ==================================================================
"""
