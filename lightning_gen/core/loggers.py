"""W&B that works with no account and no network: offline runs that `wandb sync` uploads later."""

from __future__ import annotations

import netrc
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lightning_gen.core.lightning_private import started_wandb_run

WandbMode = Literal["auto", "online", "offline", "disabled"]


def wandb_credentials_present() -> bool:
    """Whether W&B could log in without asking: an API key in the environment, an identity-token file, or a
    netrc entry for the W&B host (what `wandb login` writes). Reads local files only."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: WandbMode) -> str:
    """`auto`: the `WANDB_MODE` environment variable if set, else `online` when credentials exist, else `offline`."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return "offline" if env == "dryrun" else env
    return "online" if wandb_credentials_present() else "offline"


class AutoWandbLogger(WandbLogger):
    """Lightning's WandbLogger, online when you are logged in to W&B and offline otherwise.

    Offline runs are written under `<save_dir>/wandb/offline-run-*`; upload one later with
    `wandb sync <that folder>`. Resumed fits (`--ckpt_path last`) continue the same run id.

    Lazy, like Lightning's: building the logger writes and prints nothing. `save_dir` is created, and the note that
    an automatic run is offline printed, when the W&B run starts (the first use of `experiment`), so a command
    refused while the CLI builds the model (which it does after the logger) leaves no empty `runs/` folder behind.
    A run that logged nothing when its command stopped on bad data (Lightning starts the run just before the
    datamodule's `setup()` reads the data) is discarded by the CLI (`discard_if_empty`): no empty run is left.

    Args:
        project: W&B project name (also the folder under `save_dir` that holds each run's checkpoints).
        name: display name of the run (default: W&B picks one).
        save_dir: root folder of runs: `<save_dir>/<project>/<run id>/` and W&B's own `<save_dir>/wandb/`.
        mode: `auto` (online if logged in, else offline; `WANDB_MODE` wins), `online`, `offline` or `disabled`.
        id: run id; set it to continue an existing run (done for you on resume).
        group: W&B group of the run.
        tags: W&B tags.
        log_model: upload checkpoints as W&B artifacts (online only).
    """

    def __init__(
        self,
        project: str = "lightning-gen",
        name: str | None = None,
        save_dir: str = "runs",
        mode: WandbMode = "auto",
        id: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        log_model: bool = False,
    ) -> None:
        self.mode = resolve_wandb_mode(mode)
        self.auto_offline = self.mode == "offline" and mode == "auto"
        self._started = False
        self._logged = False  # anything sent to the run (hyperparameters, metrics, images)
        self._made: list[Path] = []  # folders the first run created, outermost first
        super().__init__(
            project=project,
            name=name,
            save_dir=save_dir,
            id=id,
            log_model=log_model and self.mode == "online",
            mode=self.mode,
            group=group,
            tags=tags,
        )

    @property
    def experiment(self) -> Any:
        """Lightning's `WandbLogger.experiment` (the W&B run, started on first use; a dummy on processes other than
        rank 0), after `save_dir` is created and the offline note printed, once."""
        if not self._started:
            self._started = True
            self._before_first_run()
        return super().experiment

    @rank_zero_only
    def _before_first_run(self) -> None:
        if self.save_dir:
            root = Path(self.save_dir)
            self._made = [p for p in (root, root / "wandb") if not p.exists()]
            root.mkdir(parents=True, exist_ok=True)  # W&B writes `<save_dir>/wandb/` there
        if self.auto_offline:
            rank_zero_info("W&B: no login found, logging offline (upload later with `wandb sync`).")

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self._logged = True
        super().log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._logged = True
        super().log_metrics(metrics, step)

    @rank_zero_only
    def discard_if_empty(self) -> None:
        """Finish the run if it started but nothing was logged to it (the command stopped on bad input first), and
        delete it when offline, with the folders its start created: no empty run is left to `wandb sync`. An
        online run is only finished (marked failed): deleting it needs the W&B API."""
        run = started_wandb_run(self)
        if run is None or self._logged:  # not started, or in use
            return
        folder = self.run_folder()
        run.finish(exit_code=1)
        if self.mode != "offline" or folder is None:
            return
        shutil.rmtree(folder, ignore_errors=True)
        for made in reversed(self._made):  # `<save_dir>/wandb` (W&B's logs and `latest-run` link), then save_dir
            if made.is_dir() and all(p.name in ("latest-run", "debug.log", "debug-internal.log", "wandb")
                                     for p in made.iterdir()):
                shutil.rmtree(made, ignore_errors=True)

    def run_folder(self) -> Path | None:
        """W&B's folder for this run (`.../wandb/offline-run-...` or `run-...`), once the run exists."""
        run = started_wandb_run(self)
        if run is None or not getattr(run, "dir", None):
            return None
        return Path(run.dir).parent
