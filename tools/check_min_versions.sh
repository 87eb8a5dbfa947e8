#!/usr/bin/env bash
# Minimum-versions check: build a fresh virtual environment with the FLOOR (lowest admitted) release of each
# version-sensitive dependency in pyproject.toml -- torch, torchvision, lightning, torchmetrics, jsonargparse --
# install the project and the rest of its dependencies around those floors, and run a smoke subset of the tests.
# A floor that pyproject claims but the code does not run on fails here. See tools/README.md.
#
#   tools/check_min_versions.sh                 # default smoke subset (a few minutes on a CPU)
#   tools/check_min_versions.sh tests/test_vae.py -k "not ddp"   # any pytest arguments instead
#
# Environment: MIN_VENV, where the environment goes (default: ${TMPDIR:-/tmp}/lightning-gen-min-venv, outside the
# tree; about 5 GB with the CUDA build of torch); PYTHON (default python3; 3.10 to 3.12, the Pythons the torch
# floor has wheels for); REUSE=1 to update an existing MIN_VENV instead of rebuilding it from nothing. pip's own
# settings (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, a pip.conf) apply, e.g. for a CPU-only torch index.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MIN_VENV:-${TMPDIR:-/tmp}/lightning-gen-min-venv}
PYTHON=${PYTHON:-python3}
PACKAGES="torch torchvision lightning torchmetrics jsonargparse"

# The floors, read from pyproject.toml (the single source of truth): "name[extras]>=X,<Y" -> "name==X".
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PYTHON" - "$PACKAGES" > "$CONSTRAINTS" <<'PY'
import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

wanted = sys.argv[1].split()
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
found = {}
for dep in deps:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*(.*)", dep)
    name, spec = m.group(1).lower(), m.group(3)
    if name in wanted:
        floor = re.search(r">=\s*([0-9][^,;\s]*)", spec)
        if not floor:
            sys.exit(f"pyproject.toml: {dep!r} has no '>=' floor")
        found[name] = floor.group(1)
missing = [n for n in wanted if n not in found]
if missing:
    sys.exit(f"pyproject.toml: no dependency named {missing}")
for name in wanted:
    print(f"{name}=={found[name]}")
PY
echo "== floors under test:"; cat "$CONSTRAINTS"

if [ "${REUSE:-0}" != 1 ] || [ ! -x "$VENV/bin/python" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
# The project and its dev extra (what .ci/run installs: pytest and the tests' optional packages) with every other
# dependency resolved around the floors: the constraints file pins the five packages to their floors, and pip fails
# if another dependency cannot live with one of them. In a reused environment this moves the pins to the current
# floors and leaves the rest alone.
"$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" -e ".[dev]"

echo "== installed:"
"$VENV/bin/python" - "$PACKAGES" "$CONSTRAINTS" <<'PY'
import sys
from importlib.metadata import version

from packaging.version import Version

pins = dict(line.strip().split("==") for line in open(sys.argv[2]) if line.strip())
bad = []
for name in sys.argv[1].split():
    have = version(name)
    print(f"  {name} {have}")
    if Version(Version(have).base_version) != Version(pins[name]):  # 2.4.0+cu121 is the floor 2.4
        bad.append(f"{name} {have} (floor {pins[name]})")
if bad:
    sys.exit("not the floors: " + ", ".join(bad))
PY

if [ $# -eq 0 ]; then
  # Default smoke subset: the fused CPU Adam (the reason for the torch floor), the losses, the networks, the
  # private Lightning attributes the project reads, DCGAN training end to end (manual optimization,
  # toggled_optimizer, 16-mixed with a GradScaler, checkpoints), pix2pix (torchmetrics' PSNR/SSIM and the
  # CatMetric(nan_strategy="disable") that sets the torchmetrics floor), torchmetrics' FID/KID arithmetic, and
  # every shipped config parsed by LightningCLI/jsonargparse.
  set -- tests/test_optim.py tests/test_losses.py tests/test_nn.py tests/test_lightning_private.py \
    tests/test_dcgan.py tests/test_pix2pix.py tests/test_metrics.py tests/test_cli.py \
    -k "not ddp and not distributed and (not test_metrics or frechet or kid) and (not test_cli or every_config_parses)"
fi
echo "== pytest $*"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
