"""A griffe extension: gradtx's docstrings use a few reStructuredText forms (``:func:`x```
roles, ``.. math::`` and ``.. code-block::`` directives) that read well in ``help()`` and in an
editor. mkdocstrings renders Markdown, so this turns them into Markdown before rendering:
roles become cross-references to the API entries, ``.. math::`` becomes a ``$$`` block for
MathJax and ``.. code-block::`` a fenced block."""

from __future__ import annotations

import re
import textwrap

import griffe

import gradtx

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data):`~?([^`]+)`")
DIRECTIVE = re.compile(r"^(\s*)\.\. (math|code-block)::\s*(\S*)\s*$")


def _role(match: re.Match) -> str:
    name = match.group(1)
    short = name.removeprefix("gradtx.")
    if hasattr(gradtx, short.split(".")[0]) and "." not in short:
        return f"[`{short}`][gradtx.{short}]"
    public = not any(part.startswith("_") for part in name.split("."))
    if public and name.startswith("gradtx.") and name.count(".") == 2:  # gradtx.tree.add
        return f"[`{short}`][{name}]"
    return f"`{short}`"


def _directives(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, kind, arg = match.groups()
        body: list[str] = []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        block = textwrap.dedent("\n".join(body)).strip("\n")
        if kind == "math":
            if "\\\\" in block:
                block = "\\begin{gathered}\n" + block + "\n\\end{gathered}"
            out += [indent + "$$", *(indent + b for b in block.splitlines()), indent + "$$", ""]
        else:
            out += [
                indent + f"```{arg or 'text'}",
                *(indent + b for b in block.splitlines()),
                indent + "```",
                "",
            ]
    return "\n".join(out)


EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class RstToMarkdown(griffe.Extension):
    """Rewrites each docstring once, when griffe loads the object; tells griffe that the
    classes made by ``@transform`` are dataclasses (their signature is their fields)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            text = _directives(ROLE.sub(_role, obj.docstring.value))
            obj.docstring.value = EXAMPLE.sub(r"\1Examples:", text)

    def on_class_instance(self, *, cls: griffe.Class, **kwargs) -> None:
        if any(str(d.value).split(".")[-1] == "transform" for d in cls.decorators):
            cls.labels.add("dataclass")
