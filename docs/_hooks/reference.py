"""MkDocs hook: reference pages generated from the code at build time, so they cannot drift from it.

- reference/options.md: every `gjiggler worker` option and its settings.JIGGLER key, from jiggler_gevent.options.OPTIONS
- reference/redis-keys.md: the key schema from jiggler_gevent/keys.py's docstring, and each Lua script's header
  comment (jiggler_gevent/scripts/*.lua)

The pages exist only in the built site (mkdocs.yml names them in its nav); nothing is written into docs/.
"""

import ast
import html
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jiggler_gevent"
GENERATED = "This page is generated from the code when the site is built"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for uri, text in (("reference/options.md", options_page()), ("reference/redis-keys.md", keys_page())):
        files.append(File.generated(config, uri, content=text))
    return files


# The worker options -------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped, line breaks removed."""
    return " ".join(text.split()).replace("|", "\\|")


def _default(option: Any) -> str:
    from jiggler_gevent.options import Kind

    value = option.default
    if option.kind is Kind.FLAG:
        return "off"
    if option.field == "queues":
        return "`default`"
    if value is None or value == ():
        found = re.search(r"\[default: ([^]]+)\]|\(default: ([^)]+)\)", option.help)
        return _cell(next(g for g in found.groups() if g)) if found else "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _value(option: Any) -> str:
    from jiggler_gevent.options import Kind

    if option.kind is Kind.FLAG:
        return "flag"
    if option.kind is Kind.CHOICE:
        return " \\| ".join(f"`{c}`" for c in option.choices)
    if option.metavar:
        return f"`{option.metavar}`"
    if option.kind is Kind.COUNT:
        bound = f"{option.minimum:g} to {option.maximum}" if option.maximum else f"≥ {option.minimum:g}"
        return f"whole number, {bound}"
    if option.kind is Kind.SECONDS:
        return f"seconds, ≥ {option.minimum:g}"
    return "text"


def options_page() -> str:
    from jiggler_gevent.options import OPTIONS

    lines = [
        "# Worker options and Django settings",
        "",
        f"{GENERATED} (from `jiggler_gevent.options.OPTIONS`, the one table the command line and the Django",
        "integration both read).",
        "",
        "Each option of `gjiggler worker` is also a key of the `JIGGLER` dict in Django's settings: the option's",
        "name in upper case. An option given on the `manage.py gjiggler` command line replaces its setting.",
        'Repeatable options take a list in settings (`"QUEUES": ["mail,3", "default"]`).',
        "",
        "| option | `JIGGLER` key | value | default | what it does |",
        "|---|---|---|---|---|",
    ]
    for o in OPTIONS:
        flags = ", ".join(f"`{f}`" for f in o.flags)
        key = f"`{o.field.upper()}`" if o.in_settings else "(command line only)"
        repeat = " (repeatable)" if o.multiple else ""
        lines.append(f"| {flags}{repeat} | {key} | {_value(o)} | {_default(o)} | {_cell(o.help)} |")
    lines += [
        "",
        "Every other `gjiggler` command takes `--redis-url` and `--namespace` as well; see the",
        "[command line reference](cli.md).",
        "",
    ]
    return "\n".join(lines)


# The Redis key schema and the Lua scripts ---------------------------------------------------------------------

_ENTRY = re.compile(r"^  (\S+)\s{2,}(\S.*)$")
_MORE = re.compile(r"^\s{10,}(\S.*)$")


def _inline(text: str) -> str:
    """Escape for HTML, keeping `code` spans as <code>."""
    parts = re.split(r"`([^`]+)`", text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _keys_docstring() -> str:
    tree = ast.parse((PACKAGE / "keys.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc, "jiggler_gevent/keys.py has no docstring"
    return doc


def _schema_html(doc: str) -> list[str]:
    """The docstring's prose as paragraphs, and its runs of `  KEY   description` lines as tables."""
    out: list[str] = []
    prose: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if prose:
            out.extend(["", f"<p>{_inline(' '.join(prose))}</p>", ""])
            prose.clear()
        if rows:
            out.append("<table><thead><tr><th>key</th><th>what it holds</th></tr></thead><tbody>")
            out.extend(f"<tr><td><code>{html.escape(k)}</code></td><td>{_inline(d)}</td></tr>" for k, d in rows)
            out.extend(["</tbody></table>", ""])
            rows.clear()

    for line in doc.splitlines():
        entry, more = _ENTRY.match(line), _MORE.match(line)
        if entry:
            if prose:
                flush()
            rows.append([entry.group(1), entry.group(2)])
        elif more and rows:
            rows[-1][1] += " " + more.group(1)
        elif line.strip():
            if rows:
                flush()
            prose.append(line.strip())
        else:
            flush()
    flush()
    return out


def _script_header(path: Path) -> tuple[str, list[str]]:
    """A script's header comment: its description, and its KEYS / ARGV / returns lines."""
    description: list[str] = []
    signature: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("--#include"):
            continue
        if not line.startswith("--"):
            break
        text = line[2:].removeprefix(" ")
        if signature or re.match(r"(KEYS|ARGV|returns)\b", text):
            signature.append(text)
        else:
            description.append(text.strip())
    name = path.stem
    summary = " ".join(description)
    summary = summary.removeprefix(f"{name}: ")
    return summary[:1].upper() + summary[1:], signature


def keys_page() -> str:
    lines = [
        "# Redis keys and Lua scripts",
        "",
        f"{GENERATED}: the key schema from the docstring of `jiggler_gevent/keys.py`, the one module that names",
        "keys, and each Lua script from its header comment (`jiggler_gevent/scripts/*.lua`).",
        "`NS` stands for the namespace (`--namespace`, `configure(namespace=...)`; default `jiggler`).",
        "",
        "## Keys",
        "",
        *_schema_html(_keys_docstring()),
        "## Lua scripts",
        "",
        "Every step that must not be seen half done (a push, a fetch, an outcome, a recovery, a limiter's",
        "check-and-take) is one of these scripts, run with `EVALSHA`. A script that `--#include`s `lib_ending`",
        "runs its functions as part of the same atomic step.",
        "",
    ]
    for path in sorted((PACKAGE / "scripts").glob("*.lua")):
        summary, signature = _script_header(path)
        lines += [f"### {path.name}", "", f"<p>{_inline(summary)}</p>", ""]
        if signature:
            lines += ["```text", *signature, "```", ""]
    return "\n".join(lines)
