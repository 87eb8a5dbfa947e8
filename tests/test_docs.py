"""The documentation: the mkdocs site builds with `--strict` (every link to the code, option table and included
config resolves), the README's links and pictures exist, and the README stays short with one technique row per
technique."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HOOK = ROOT / "docs" / "hooks" / "source_links.py"
MAX_README_LINES = 250


def load_hook():
    """The mkdocs hook, imported by path as mkdocs imports it (it needs no mkdocs for these functions)."""
    if "docs_hook_source_links" not in sys.modules:
        spec = importlib.util.spec_from_file_location("docs_hook_source_links", HOOK)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # before running it: its dataclass looks its module up there
        spec.loader.exec_module(module)
    return sys.modules["docs_hook_source_links"]


def techniques() -> list[str]:
    """The technique classes the package exports (`lightning_gen.__all__`), read without importing torch."""
    tree = ast.parse((ROOT / "lightning_gen" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("lightning_gen/__init__.py has no __all__")


# ---- the site --------------------------------------------------------------------------------------------------


def test_site_builds_strict(tmp_path):
    for package in ("mkdocs", "material"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed: pip install -e '.[docs]' (the dev extra includes it)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [output[-5000:]])
    page = (site / "techniques" / "dcgan" / "index.html").read_text()
    assert "src:" not in re.sub(r"<pre.*?</pre>|<code>.*?</code>", "", page, flags=re.DOTALL), \
        "a src: link was left unresolved"
    assert re.search(r'href="\.\./\.\./source/lightning_gen/dcgan\.py/#L-\d+"', page), "no link to a line of dcgan.py"
    assert "<td><code>latent_dim</code></td>" in page, "the DCGAN options table was not generated"
    assert (site / "source" / "lightning_gen" / "dcgan.py" / "index.html").is_file()


# ---- the README ------------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*\b(?:src|href)=\"([^\"]+)\"")


def readme_targets(text: str) -> list[str]:
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # code blocks hold no links
    text = re.sub(r"`[^`\n]*`(?!\])", "", text)  # nor do code spans, unless they are a link's text
    return LINK.findall(text) + HTML_SRC.findall(text)


def test_readme_links_and_images_resolve():
    missing = []
    for target in readme_targets(README.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):  # https:, mailto:, in-page anchors
            continue
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            missing.append(target)
    assert not missing, f"README.md links to files that do not exist: {missing}"


def technique_table(lines: list[str]) -> tuple[int, int]:
    """(first, last) line index of the README table whose header starts with `| technique |`."""
    start = next((i for i, line in enumerate(lines) if line.startswith("| technique |")), None)
    assert start is not None, "README.md has no table with a `| technique |` header"
    end = start
    while end + 1 < len(lines) and lines[end + 1].startswith("|"):
        end += 1
    return start, end


def test_readme_is_short_with_one_unbroken_row_per_technique():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it to {MAX_README_LINES} and move detail into docs/")
    start, end = technique_table(lines)
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert header == ["technique", "paper", "config", "docs page", "headline figure"], header
    after = next((line for line in lines[end + 1:] if line.strip()), "")
    assert not after.startswith("|"), (
        f"the technique table has a blank line inside it (line {end + 2}): rows after it render as text on GitHub")
    rows = lines[start + 2:end + 1]
    firsts = [row.strip("|").split("|")[0] for row in rows]
    for name in techniques():
        found = [cell for cell in firsts if f"`{name}`" in cell]
        assert len(found) == 1, f"technique {name} has {len(found)} rows in the README's technique table (want 1)"
    assert len(rows) == len(techniques()), (
        f"the technique table has {len(rows)} rows for {len(techniques())} techniques {techniques()}")


# ---- the hook's resolver ---------------------------------------------------------------------------------------


def test_src_links_resolve_to_the_line_of_the_symbol():
    hook = load_hook()
    target = hook.resolve(ROOT, "lightning_gen/losses.py:discriminator_loss")
    lines = (ROOT / "lightning_gen" / "losses.py").read_text().splitlines()
    assert target.path == "lightning_gen/losses.py"
    assert lines[target.line - 1].startswith("def discriminator_loss(")
    method = hook.resolve(ROOT, "lightning_gen/dcgan.py:DCGAN.training_step")
    assert "def training_step(" in (ROOT / method.path).read_text().splitlines()[method.line - 1]
    assert hook.resolve(ROOT, "configs/dcgan/mnist.yaml").line == 1  # a whole file
    markdown = "See [the step](src:lightning_gen/dcgan.py:DCGAN.training_step); `[not a link](src:nowhere.py)`."
    rewritten, errors = hook.rewrite_links(markdown, "techniques/dcgan.md", ROOT)
    assert not errors
    assert f"(../source/lightning_gen/dcgan.py.md#L-{method.line})" in rewritten
    assert "`[not a link](src:nowhere.py)`" in rewritten  # code is left alone


def test_src_link_to_a_missing_symbol_or_file_fails_naming_the_page_and_link():
    hook = load_hook()
    with pytest.raises(hook.SourceLinkError, match="no `no_such_function` in lightning_gen/losses.py"):
        hook.resolve(ROOT, "lightning_gen/losses.py:no_such_function")
    with pytest.raises(hook.SourceLinkError, match="no `no_such_method` in lightning_gen/dcgan.py:DCGAN"):
        hook.resolve(ROOT, "lightning_gen/dcgan.py:DCGAN.no_such_method")
    with pytest.raises(hook.SourceLinkError, match="no file lightning_gen/no_such_file.py"):
        hook.resolve(ROOT, "lightning_gen/no_such_file.py:DCGAN")
    markdown = "Text [the step](src:lightning_gen/dcgan.py:DCGAN.no_such_method) more."
    rewritten, errors = hook.rewrite_links(markdown, "techniques/dcgan.md", ROOT)
    assert rewritten == markdown
    assert errors == ["techniques/dcgan.md: broken source link [the step](src:lightning_gen/dcgan.py:"
                      "DCGAN.no_such_method): no `no_such_method` in lightning_gen/dcgan.py:DCGAN"]
