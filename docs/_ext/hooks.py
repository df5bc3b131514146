"""MkDocs hooks for the gradtx site.

1. **README sections as pages.** The README is the tested manual (``tests/test_readme.py`` runs
   its code and checks what it prints). A guide page embeds a section of it with a line
   ``<!-- readme: ## Title -->`` (the section with its heading, shifted to level 2) or
   ``<!-- readme-body: ## Title -->`` (its body only, under the page's own title), so the site
   and the README cannot drift apart. Links between README sections are pointed at the page
   that holds the target, and the repository files the sections link to (plots, examples) are
   published with the site.
2. **Every public name has a page entry and a docstring.** After the build, every public name
   of ``gradtx`` (the top level and the ``tree``, ``tree_utils``, ``numerics``, ``contrib``,
   ``losses``, ``transforms`` and ``schedules`` namespaces) must be rendered by a ``::: name``
   entry of an API page, under its own name or as the same object under another name; the
   build fails otherwise.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
INCLUDE = re.compile(r"^<!-- readme(-body)?: (#+) (.+?) -->$", re.M)
HEADING = re.compile(r"^(#+) (.+)$")
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
ENTRY = re.compile(r"^::: ([\w.]+)\s*$", re.M)
NAMESPACES = ("tree", "tree_utils", "numerics", "contrib", "losses", "transforms", "schedules")

log = logging.getLogger("mkdocs.hooks.gradtx")
_entries: dict[str, str] = {}  # identifier -> page
_anchor_page: dict[str, str] = {}  # README anchor -> docs page that holds it


def _slug(title: str) -> str:
    """GitHub's heading anchors (what the README's own links use)."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group() == "_" else "", title.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _readme_lines() -> list[tuple[int, str, str]]:
    """(level, title, line) for each README line; level 0 outside headings and in code."""
    out, in_code = [], False
    for line in README.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        match = None if in_code else HEADING.match(line)
        out.append((len(match.group(1)), match.group(2), line) if match else (0, "", line))
    return out


def _section(level: int, title: str) -> list[tuple[int, str, str]]:
    lines = _readme_lines()
    for i, (lv, t, _) in enumerate(lines):
        if lv == level and t == title:
            end = next((j for j in range(i + 1, len(lines)) if 0 < lines[j][0] <= level), None)
            return lines[i:end]
    raise PluginError(f"docs: README has no section {'#' * level} {title!r}")


def _included(markdown: str):
    """Yield (match, body_only, level, title) for each include line of a page."""
    for match in INCLUDE.finditer(markdown):
        yield match, bool(match.group(1)), len(match.group(2)), match.group(3)


def on_files(files, config):
    """Map README anchors to pages, and publish the repository files the sections link to."""
    _anchor_page.clear()
    docs = Path(config["docs_dir"])
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()
        rel = page.relative_to(docs).as_posix()
        for _, _, level, title in _included(text):
            for lv, t, _ in _section(level, title):
                if lv:
                    _anchor_page[_slug(t)] = rel
            for _, _, line in _section(level, title):
                for target in LINK.findall(line):
                    path = target.split("#")[0]
                    if not path or "://" in path or path.startswith("docs/"):
                        continue
                    if (ROOT / path).is_file() and files.get_file_from_path(path) is None:
                        files.append(
                            File(path, str(ROOT), config["site_dir"], config["use_directory_urls"])
                        )
    return files


def _rewrite(line: str, page: str) -> str:
    def link(match: re.Match) -> str:
        target = match.group(1)
        if target.startswith("#"):
            holder = _anchor_page.get(target[1:])
            if holder and holder != page:
                target = holder + target
        elif target.startswith("docs/"):
            target = target.removeprefix("docs/")
        return f"]({target})"

    return LINK.sub(link, line)


def on_page_markdown(markdown, page, config, files):
    """Expand the README includes; record the API entries of the page."""
    rel = page.file.src_uri

    def expand(match: re.Match) -> str:
        body_only, level, title = bool(match.group(1)), len(match.group(2)), match.group(3)
        section = _section(level, title)
        if body_only:
            section = section[1:]
            shift = level - 1
        else:
            shift = level - 2
        out = []
        for lv, t, line in section:
            out.append("#" * (lv - shift) + " " + t if lv else line)
        return "\n".join(_rewrite(line, rel) for line in out)

    markdown = INCLUDE.sub(expand, markdown)
    for identifier in ENTRY.findall(markdown):
        _entries[identifier] = rel
    return markdown


def _public() -> dict[str, object]:
    import gradtx

    names = {
        f"gradtx.{n}": getattr(gradtx, n)
        for n in dir(gradtx)
        if not n.startswith("_") and not inspect.ismodule(getattr(gradtx, n))
    }
    for ns in NAMESPACES:
        module = importlib.import_module(f"gradtx.{ns}")
        for n in module.__all__:
            names[f"gradtx.{ns}.{n}"] = getattr(module, n)
    return names


def _own_doc(obj) -> str:
    """The object's own docstring: not one a class inherits, nor the signature that
    ``dataclasses`` writes for a class that has none."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if not doc or (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")):
        return ""
    return doc


def _resolve(identifier: str):
    module, _, name = identifier.rpartition(".")
    return getattr(importlib.import_module(module), name)


def on_post_build(config):
    """Fail the build on a public name with no API entry or no docstring."""
    public = _public()
    documented = {id(_resolve(i)) for i in _entries}
    missing = sorted(n for n, obj in public.items() if id(obj) not in documented)
    undocumented = sorted(
        n
        for n, obj in public.items()
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not _own_doc(obj)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} public names have no API entry: {', '.join(missing)}")
    if undocumented:
        problems.append(f"public names without a docstring: {', '.join(undocumented)}")
    if problems:
        raise PluginError("docs: " + "; ".join(problems))
