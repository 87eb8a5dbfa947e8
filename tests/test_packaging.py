"""Packaging hygiene (pyproject.toml): the extras that error messages name exist, `dev` installs the extras
instead of copying their packages, the dependency floors admit only versions the code runs on, the warning
filters name what they silence, and the tree passes `ruff check`."""

import importlib.util
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli, the same parser
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS = PROJECT["optional-dependencies"]
NAME = PROJECT["name"]  # lightning-gen
# `pip install "lightning-gen[atari]"`, `'lightning-gen[sr]'`, `lightning_gen[a,b]`
EXTRA_HINT = re.compile(r"lightning[-_]gen\[([^\]]*)\]")
PACKAGE_HINT = re.compile(r"pip install ([A-Za-z0-9][A-Za-z0-9_.-]*)")  # `pip install h5py` (not quoted, not -e)
# named by a hint without being a dependency (none today; a build tool an extra needs before it installs would be)
NOT_DEPENDENCIES: set[str] = set()
SOURCES = ("lightning_gen", "datamodules")


def requirement(name: str, reqs: list[str]) -> Requirement:
    found = [Requirement(r) for r in reqs if Requirement(r).name == name]
    assert len(found) == 1, f"expected one requirement on {name} in {reqs}"
    return found[0]


def floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors, f"{req} has no lower bound"
    return max(floors)


def hints(pattern: re.Pattern) -> list[tuple[str, int, str]]:
    """(file, line, name) for each match of `pattern` (comma-separated names) in the package sources."""
    found = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for group in pattern.findall(line):
                    for name in filter(None, (n.strip() for n in group.split(","))):
                        found.append((str(path.relative_to(ROOT)), number, name))
    return found


def test_every_extra_an_error_message_names_exists():
    named = hints(EXTRA_HINT)
    assert named, "no `lightning-gen[...]` hint found: the pattern or the source folders are wrong"
    missing = [f"{file}:{line} names [{extra}]" for file, line, extra in named if extra not in EXTRAS]
    assert not missing, f"extras named in messages but not in pyproject's optional-dependencies: {missing}"


def test_every_package_an_error_message_names_is_a_dependency():
    declared = {Requirement(r).name.lower() for r in PROJECT["dependencies"]}
    declared |= {Requirement(r).name.lower() for reqs in EXTRAS.values() for r in reqs}
    missing = [f"{file}:{line} names {package}" for file, line, package in hints(PACKAGE_HINT)
               if package.lower() not in declared | NOT_DEPENDENCIES]
    assert not missing, f"packages named in `pip install` hints but in no dependency list: {missing}"


def test_dev_installs_the_other_extras_instead_of_copying_their_packages():
    dev = [Requirement(r) for r in EXTRAS["dev"]]
    own = [r for r in dev if r.name == NAME]
    assert len(own) == 1, f"dev should reference the extras once, as {NAME}[...]: {EXTRAS['dev']}"
    referenced = own[0].extras
    assert referenced <= set(EXTRAS) - {"dev"}, f"dev references unknown extras {referenced - set(EXTRAS)}"
    # what a contributor needs: the tests' optional packages, the docs and the linter
    assert {"rl", "atari", "sr", "docs", "lint"} <= referenced
    copied = {r.name for r in dev} & {Requirement(p).name for e in referenced for p in EXTRAS[e]}
    assert not copied, f"dev repeats packages its extras already install: {copied}"


def test_dependency_floors_admit_only_versions_the_code_runs_on():
    deps = PROJECT["dependencies"]
    torch = requirement("torch", deps)
    # CPU fused Adam (lightning_gen/core/optim.py) needs 2.4; 2.14.1 is the version the project is developed on
    assert floor(torch) >= Version("2.4")
    assert not torch.specifier.contains("2.3.1") and torch.specifier.contains("2.14.1")
    assert floor(requirement("torchvision", deps)) >= Version("0.19")  # the torchvision of torch 2.4
    assert floor(requirement("lightning", deps)) >= Version("2.6")  # toggled_optimizer
    jsonargparse = requirement("jsonargparse", deps)
    assert floor(jsonargparse) >= Version("4.39") and not jsonargparse.specifier.contains("5.0")
    assert "signatures" in jsonargparse.extras


def first_matching_filter(category: type[Warning], module: str, message: str = "x") -> str:
    """The action the active warning filters (pytest applies pyproject's `filterwarnings` around each test) take
    on a warning raised from `module`, as `warnings.warn_explicit` would decide it."""
    for action, msg, cat, mod, lineno in warnings.filters:
        if ((msg is None or msg.match(message)) and issubclass(category, cat)
                and (mod is None or mod.match(module)) and lineno == 0):
            return action
    return "default"


def test_deprecation_filters_name_what_they_silence():
    for entry in PYPROJECT["tool"]["pytest"]["ini_options"].get("filterwarnings", []):
        action, _, rest = entry.partition(":")
        fields = rest.split(":")
        category, module = (fields + ["", ""])[1:3]
        if action == "ignore" and "Deprecation" in category:
            assert module.strip(), f"{entry!r} silences deprecations from every module, the project's own too"
    # the project's own deprecations show (a module regex `lightning` would also match `lightning_gen`) ...
    for own in ("lightning_gen.core.cli", "lightning_gen", "datamodules.base", "tests.test_metrics"):
        assert first_matching_filter(DeprecationWarning, own) != "ignore", f"filterwarnings silences {own}'s"
    # ... and the third-party ones pyproject names do not
    assert first_matching_filter(DeprecationWarning, "lightning.pytorch.cli") == "ignore"


def ruff_command() -> list[str] | None:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_check_passes():
    ruff = ruff_command()
    if ruff is None:
        pytest.skip('ruff is not installed: pip install -e ".[lint]" (or ".[dev]")')
    result = subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        version = subprocess.run([*ruff, "--version"], capture_output=True, text=True).stdout.strip()
        pytest.fail(f"`ruff check .` ({version}; the lint extra asks for {EXTRAS['lint']}) found problems "
                    f"(`ruff check --fix .` fixes those marked [*]):\n{result.stdout}{result.stderr}", pytrace=False)
