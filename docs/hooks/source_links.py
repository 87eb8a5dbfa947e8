"""MkDocs hook: links to the code by symbol, generated option tables and included files.

Three things the pages write, resolved at build time so that they cannot drift from the code:

- `[text](src:lightning_gen/dcgan.py:DCGAN.training_step)`: a link to a line of the code. The part after the second
  colon is a symbol found with `ast`: a class, a function, a method (`Class.method`, any depth) or a module-level
  name (an assignment, or a name a package re-exports with `from x import name`, which is followed to where it is
  defined). Without a symbol (`src:configs/dcgan/mnist.yaml`) the link goes to the top of the file. Every file that
  is linked gets a generated page (`source/<path>/`) with the highlighted code and one anchor per line (`#L-42`);
  the link is rewritten to that page's anchor. A missing file or symbol is a warning naming the page and the link,
  so `mkdocs build --strict` fails.
- `<!-- options: lightning_gen.DCGAN -->`: replaced by a table of the class's `__init__` arguments (name, type,
  default, meaning) built by jsonargparse from the signature and the docstring's `Args:` section: the very data
  `lightning-gen fit --model.help DCGAN` prints.
- `<!-- include: configs/dcgan/mnist.yaml -->`: replaced by the file, in a collapsed block.

The functions that do the work (`resolve`, `rewrite_links`, `options_table`, `include_block`) need no MkDocs and
are tested directly (tests/test_docs.py); the `on_*` functions are the MkDocs events.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import logging
import posixpath
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.source_links")

SOURCE_DIR = "source"  # generated pages live under this folder of the site
LINE_ANCHOR = "L"  # line n of a source page has the anchor #L-n

# [text](src:path) or [text](src:path:Symbol.attr); the text may hold `code` but no brackets
SRC_LINK = re.compile(r"\[(?P<text>[^\]\n]*)\]\(src:(?P<target>[^)\s]+)\)")
OPTIONS_MARKER = re.compile(r"^<!--\s*options:\s*(?P<cls>[\w.]+)(?P<own>\s+own)?\s*-->[ \t]*$", re.MULTILINE)
INCLUDE_MARKER = re.compile(r"^<!--\s*include:\s*(?P<path>[^\s>]+)\s*-->[ \t]*$", re.MULTILINE)
# fenced code blocks and inline code spans: src: links inside them are examples, not links
CODE = re.compile(r"^(?P<fence>```|~~~)[^\n]*\n.*?^(?P=fence)[ \t]*$|`[^`\n]+`", re.MULTILINE | re.DOTALL)


class SourceLinkError(ValueError):
    """A `src:` link whose file or symbol does not exist (the message says which)."""


@dataclass(frozen=True)
class Target:
    path: str  # relative to the repository root, POSIX separators
    line: int  # 1-based; 1 for a link to the whole file


# ---- resolving a symbol to a line --------------------------------------------------------------------------------


def _definitions(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """The names a block of statements defines: classes, functions, assignments and imports (last one wins)."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = node
        elif isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:`, `try: import ...`
            inner = list(node.body) + list(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                inner += handler.body
            for key, value in _definitions(inner).items():
                names.setdefault(key, value)
    return names


def _first_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators])


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_module(root: Path, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name of `from <module> import ...` in the file `path`."""
    if not node.level:
        return node.module or ""
    package = list(path.parent.relative_to(root).parts)  # level 1: the file's own package
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


@functools.lru_cache(maxsize=512)
def _parse(path: Path, rel: str, mtime_ns: int) -> ast.Module:
    """The syntax tree of a file, parsed once per version of it (pages link to the same files many times)."""
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    except SyntaxError as err:
        raise SourceLinkError(f"{rel} does not parse ({err.msg}, line {err.lineno})") from None


def _find(root: Path, path: Path, symbol: str, seen: set[tuple[Path, str]]) -> Target:
    if (path, symbol) in seen:
        raise SourceLinkError(f"`{symbol}` is imported in a cycle")
    seen.add((path, symbol))
    rel = path.relative_to(root).as_posix()
    parts = symbol.split(".")
    body: list[ast.stmt] = _parse(path, rel, path.stat().st_mtime_ns).body
    node: ast.AST | None = None
    for depth, part in enumerate(parts):
        node = _definitions(body).get(part)
        if node is None:
            where = rel if depth == 0 else f"{rel}:{'.'.join(parts[:depth])}"
            raise SourceLinkError(f"no `{part}` in {where}")
        if isinstance(node, ast.ImportFrom) and depth == 0:
            alias = next(a for a in node.names if (a.asname or a.name) == part)
            module = _imported_module(root, path, node)
            source = _module_file(root, module)
            if source is None:  # imported from outside the repository: link the import line
                if len(parts) > 1:
                    raise SourceLinkError(f"`{part}` in {rel} comes from {module}, outside this repository")
                return Target(rel, node.lineno)
            return _find(root, source, ".".join([alias.name] + parts[1:]), seen)
        if depth < len(parts) - 1:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                raise SourceLinkError(f"`{'.'.join(parts[: depth + 1])}` in {rel} is not a class or function")
            body = node.body
    assert node is not None
    return Target(rel, _first_line(node))


def resolve(root: Path, target: str) -> Target:
    """`path` or `path:Symbol.attr` (relative to the repository `root`) -> the file and line it names.

    Raises `SourceLinkError` when the file does not exist or has no such symbol."""
    path_part, _, symbol = target.partition(":")
    path_part = path_part.strip("/")
    file = (root / path_part).resolve()
    try:
        file.relative_to(root.resolve())
    except ValueError:
        raise SourceLinkError(f"{path_part} is outside the repository") from None
    if not file.is_file():
        raise SourceLinkError(f"no file {path_part}")
    if not symbol:
        return Target(Path(path_part).as_posix(), 1)
    if file.suffix != ".py":
        raise SourceLinkError(f"symbols can only be looked up in Python files, not in {path_part}")
    return _find(root.resolve(), file, symbol, set())


def source_page_uri(path: str) -> str:
    """The generated page of a source file, as a docs-relative path: `source/lightning_gen/dcgan.py.md`."""
    return f"{SOURCE_DIR}/{path}.md"


def _mask_code(markdown: str) -> str:
    """`markdown` with every code block and code span blanked out (same length, newlines kept), so that a
    `[text](src:...)` shown as an example in code is not taken for a link, while a link whose text is code
    (`` [`DCGAN`](src:...) ``) still is."""
    return CODE.sub(lambda m: re.sub(r"[^\n]", "x", m.group(0)), markdown)


def _links(markdown: str) -> list[tuple[int, int, str, str]]:
    """(start, end, text, target) of every `src:` link outside code."""
    return [(m.start(), m.end(), markdown[m.start("text"):m.end("text")], m.group("target"))
            for m in SRC_LINK.finditer(_mask_code(markdown))]


def link_targets(markdown: str) -> list[str]:
    """Every `src:` link target of a page, outside code."""
    return [target for _, _, _, target in _links(markdown)]


def rewrite_links(markdown: str, page_uri: str, root: Path) -> tuple[str, list[str]]:
    """Rewrite every `src:` link of the page at `page_uri` (docs-relative, e.g. `techniques/dcgan.md`) to the line
    anchor of its source page. Returns the new markdown and one error message per broken link, each naming the page
    and the link; broken links are left as they were."""
    errors: list[str] = []
    page_dir = posixpath.dirname(page_uri) or "."
    pieces, last = [], 0
    for start, end, text, target in _links(markdown):
        pieces.append(markdown[last:start])
        last = end
        try:
            found = resolve(root, target)
        except SourceLinkError as err:
            errors.append(f"{page_uri}: broken source link [{text}](src:{target}): {err}")
            pieces.append(markdown[start:end])
            continue
        href = posixpath.relpath(source_page_uri(found.path), page_dir)
        anchor = f"#{LINE_ANCHOR}-{found.line}" if found.line > 1 else ""
        pieces.append(f"[{text}]({href}{anchor})")
    pieces.append(markdown[last:])
    return "".join(pieces), errors


# ---- generated source pages ----------------------------------------------------------------------------------------


def source_page(root: Path, path: str) -> str:
    """The markdown of a source file's page: a title and the highlighted code with an anchor per line."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_for_filename
    from pygments.util import ClassNotFound

    code = (root / path).read_text(encoding="utf-8")
    try:
        lexer = get_lexer_for_filename(path, code)
    except ClassNotFound:
        lexer = TextLexer()
    formatter = HtmlFormatter(linenos="inline", lineanchors=LINE_ANCHOR, linespans="line", anchorlinenos=True,
                              wrapcode=True, cssclass="highlight source-code")
    body = highlight(code, lexer, formatter)
    return ("---\nsearch:\n  exclude: true\nhide:\n  - toc\n---\n\n"  # material: no search index, no empty toc
            f"# {path}\n\n"
            f"<p class=\"source-note\">The file as it is in this version of the project, generated when the site was "
            f"built.</p>\n\n{body}\n")


# ---- option tables (the same data as `--model.help`) ----------------------------------------------------------------


def _format_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_default(v) for v in value) + "]"
    return str(value)


def _cell(text: str) -> str:
    """Text for a markdown table cell: one line, pipes escaped outside code spans."""
    text = " ".join(text.split())
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def options_table(class_path: str, own_only: bool = False) -> str:
    """A markdown table of `class_path`'s init arguments as LightningCLI sees them: name, type, default, meaning.

    `own_only`: only the arguments the class's own `__init__` names, not those its `**kwargs` pass on to a parent
    (for a subclass of a third-party class whose docstring is not written for this table)."""
    from jsonargparse import ArgumentParser

    try:  # how `--help` writes a type (a private name: fall back to the type's repr if it moves)
        from jsonargparse._typehints import type_to_str
    except ImportError:
        type_to_str = None

    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise SourceLinkError(f"cannot import {class_path}: {err}") from None
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "x", fail_untyped=False)
    own = set(inspect.signature(cls.__init__).parameters) if own_only else None
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for action in parser._actions:
        dest = getattr(action, "dest", "")
        if not dest.startswith("x.") or action.help is None or dest.count(".") > 1:
            continue
        if own is not None and dest[2:] not in own:
            continue
        typehint = getattr(action, "_typehint", None) or action.type
        if typehint is None:
            type_str = "bool" if "YesNo" in type(action).__name__ else ""
        elif type_to_str is not None:
            type_str = type_to_str(typehint)
        else:
            type_str = str(typehint)
        default = "required" if action.required else f"`{_format_default(action.default)}`"
        help_text = action.help if action.help != "==SUPPRESS==" else ""
        type_str = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", " ".join(type_str.split()))
        type_cell = f"`{type_str}`" if type_str else ""
        rows.append(f"| `{dest[2:]}` | {type_cell} | {default} | {_cell(help_text)} |")
    if len(rows) == 2:
        raise SourceLinkError(f"{class_path} has no documented init arguments")
    return "\n".join(rows)


def include_block(root: Path, path: str) -> str:
    """The file at `path` as a collapsed block of highlighted code titled with its path."""
    file = root / path
    if not file.is_file():
        raise SourceLinkError(f"no file {path}")
    languages = {".yaml": "yaml", ".yml": "yaml", ".py": "python", ".toml": "toml", ".sh": "bash"}
    language = languages.get(file.suffix, "text")
    code = file.read_text(encoding="utf-8").rstrip("\n")
    indented = "\n".join(("    " + line) if line else "" for line in code.splitlines())
    return f'??? example "{path}"\n\n    ```{language}\n{indented}\n    ```\n'


def expand_markers(markdown: str, page_uri: str, root: Path) -> tuple[str, list[str]]:
    """Replace the options and include markers of a page. Returns the markdown and error messages."""
    errors: list[str] = []

    def options(match: re.Match) -> str:
        try:
            return options_table(match.group("cls"), own_only=bool(match.group("own")))
        except Exception as err:  # an import error in the package must name the page, not crash the build
            errors.append(f"{page_uri}: options table of {match.group('cls')}: {err}")
            return match.group(0)

    def include(match: re.Match) -> str:
        try:
            return include_block(root, match.group("path"))
        except SourceLinkError as err:
            errors.append(f"{page_uri}: include {match.group('path')}: {err}")
            return match.group(0)

    markdown = OPTIONS_MARKER.sub(options, markdown)
    return INCLUDE_MARKER.sub(include, markdown), errors


# ---- MkDocs events ---------------------------------------------------------------------------------------------------

_root: Path | None = None


def on_config(config: Any) -> Any:
    global _root
    _root = Path(config.config_file_path).resolve().parent
    if str(_root) not in sys.path:  # the option tables import the project's packages, installed or not
        sys.path.insert(0, str(_root))
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add one generated page per source file that some page links to."""
    from mkdocs.structure.files import File, InclusionLevel

    assert _root is not None
    wanted: set[str] = set()
    for file in files.documentation_pages():
        for target in link_targets(file.content_string):
            try:  # the page of the file where the symbol is defined (a re-export may point to another file)
                wanted.add(resolve(_root, target).path)
            except SourceLinkError:
                pass  # reported, with the page's name, by on_page_markdown
    for path in sorted(wanted):
        files.append(File.generated(config, source_page_uri(path), content=source_page(_root, path),
                                    inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    assert _root is not None
    uri = page.file.src_uri
    if uri.startswith(SOURCE_DIR + "/"):
        return markdown
    markdown, errors = expand_markers(markdown, uri, _root)
    markdown, link_errors = rewrite_links(markdown, uri, _root)
    for message in errors + link_errors:
        log.warning(message)
    return markdown
