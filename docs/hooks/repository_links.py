"""MkDocs hook: links from a page to a file of the repository outside docs/.

The pages link to code, manifests and workflows with relative paths
(``../src/tsops/core/errors.py``), which work where the Markdown is read in the
repository (GitHub, an editor). They are not pages, so MkDocs would report each as a
link to a missing page. This hook checks that each such file or folder exists in the
repository (a moved module fails ``mkdocs build --strict``, like a broken link between
pages) and points the link at ``repo_url``'s copy of it. Links between pages stay with
MkDocs' own validation (``validation:`` in mkdocs.yml), so those still fail strictly.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.repository_links")

# [text](target) and ![alt](target), target without spaces; an optional "title" after it
LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s#]+)(#[^)\s]*)?((?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")


def on_page_markdown(markdown, page, config, files):
    root = Path(config["config_file_path"]).resolve().parent
    docs = Path(config["docs_dir"]).resolve()
    page_dir = (docs / page.file.src_uri).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")
    branch = config.get("extra", {}).get("repository_branch", "main")

    def rewrite(match: re.Match) -> str:
        opening, target, anchor, closing = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return match.group(0)  # a URL or an absolute path: not a repository file
        path = Path(posixpath.normpath(str(page_dir / target)))
        if path.is_relative_to(docs):
            return match.group(0)  # a page or an asset: MkDocs checks it
        if not path.is_relative_to(root):
            log.warning("%s: link %r leaves the repository", page.file.src_uri, target)
            return match.group(0)
        rel = path.relative_to(root).as_posix()
        if not path.exists():
            log.warning(
                "%s: link %r names %s, which is not in the repository: fix the path",
                page.file.src_uri,
                target,
                rel,
            )
            return match.group(0)
        if not repo_url:
            log.warning("set repo_url in mkdocs.yml to link %s to the repository", rel)
            return match.group(0)
        kind = "tree" if path.is_dir() else "blob"
        return f"{opening}{repo_url}/{kind}/{branch}/{rel}{anchor or ''}{closing}"

    # leave fenced code alone: a snippet may show a link as text
    out, fence = [], None
    for line in markdown.split("\n"):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(2)[0] * 3
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            line = LINK.sub(rewrite, line)
        out.append(line)
    return "\n".join(out)
