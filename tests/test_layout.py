"""The package layout: `lightning_gen/*.py` lists the techniques, techniques do not import each other, the
plumbing lives once in the package, and the module paths of release 0.1 still work."""

import ast
import importlib
import re
from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI  # noqa: F401  (jsonargparse resolves class paths as the CLI does)

import lightning_gen
from lightning_gen.core.technique import Technique

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_gen"
NOT_TECHNIQUES = {"__init__", "losses"}
PARENTS = {"cgan": {"dcgan"}}  # a subclass may import its parent technique
CLI_OVERRIDES = {"._parse_ckpt_path", "._instantiate_trainer"}  # listed in core/lightning_private.py


def technique_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in NOT_TECHNIQUES)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("name", technique_modules())
def test_every_top_level_module_is_a_technique(name):
    module = importlib.import_module(f"lightning_gen.{name}")
    techniques = [obj for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, Technique) and obj.__module__ == module.__name__]
    assert techniques, f"lightning_gen/{name}.py defines no Technique: support code belongs in a sub-package"


@pytest.mark.parametrize("name", technique_modules())
def test_techniques_do_not_import_other_techniques(name):
    allowed = PARENTS.get(name, set())
    others = {f"lightning_gen.{t}" for t in technique_modules() if t != name and t not in allowed}
    assert not imported_modules(PACKAGE / f"{name}.py") & others


def test_support_code_imports_no_technique():
    techniques = {f"lightning_gen.{t}" for t in technique_modules()}
    for path in PACKAGE.glob("*/**/*.py"):
        found = imported_modules(path) & techniques
        assert not found, f"{path.relative_to(ROOT)} imports {found}"


def test_the_plumbing_lives_once():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        if rel != "lightning_gen/core/technique.py":
            assert "toggle_optimizer" not in text, f"{rel}: use Technique.optimizing"
        if rel != "lightning_gen/core/lightning_private.py":
            found = re.findall(r"\._(?:trainer|logger_connector|combined_loader|results|accelerator_connector"
                               r"|experiment|checkpoint_connector|data_connector|parse_ckpt_path|instantiate_trainer)\b",
                               text)
            found = [f for f in found if not (rel == "lightning_gen/core/cli.py" and f in CLI_OVERRIDES)]
            assert not found, f"{rel} reads private Lightning attributes {found}: go through core/lightning_private.py"


@pytest.mark.parametrize("old, new", sorted(lightning_gen.MOVED_MODULES.items()))
def test_module_paths_of_release_0_1_still_import(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


@pytest.mark.parametrize("class_path", [
    "lightning_gen.loggers.AutoWandbLogger", "lightning_gen.callbacks.GeneratorEMA", "lightning_gen.checks.ConfigError",
    "lightning_gen.cli.GenCLI", "lightning_gen.metrics.SampleQuality", "lightning_gen.sr_metrics.SRMetrics",
])
def test_class_paths_of_release_0_1_resolve(class_path):
    module, name = class_path.rsplit(".", 1)
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_old_config_class_paths_run_through_the_cli(tmp_path):
    from tests.conftest import QUIET, TINY, run_cli

    old = tmp_path / "old.yaml"
    old.write_text(
        "trainer:\n"
        "  logger:\n"
        "    class_path: lightning_gen.loggers.AutoWandbLogger\n"
        "    init_args: {mode: disabled, save_dir: runs}\n"
        "  callbacks:\n"
        "    - class_path: lightning_gen.callbacks.GeneratorEMA\n"
    )
    result = run_cli(["fit", "--config", TINY, "--config", str(old), "--trainer.max_epochs", "1",
                      "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
