"""Gradient synchronisation for techniques with several optimizers under DDP.

Lightning's DDP strategy wraps the whole LightningModule in one `DistributedDataParallel`, whose reducer expects
every parameter to receive a gradient in every backward pass. A GAN's discriminator step leaves the generator
unused, so plain `strategy="ddp"` fails ("parameters that were not used"), and `find_unused_parameters=True`
all-reduces both networks at every step. Instead, `Technique.optimizing` calls `disable_ddp_gradient_sync` before
its backward pass (Lightning switches DDP's sync back on after every step) and `all_reduce_gradients(network)`
after each `manual_backward`, so each network's gradients are averaged across processes exactly once, for its
own step. Outside DDP both are no-ops. `first_visit_mask` tells evaluation which items DDP's sampler repeated.
`check_multi_node_launcher` refuses `num_nodes > 1` that no launcher will ever start on the other nodes.
"""

from __future__ import annotations

import os

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from lightning_gen.core.checks import ConfigError

MULTI_NODE_LAUNCHERS = (
    "torchrun on every node (`torchrun --nnodes N --node-rank R --nproc-per-node M --master-addr HOST --master-port "
    "PORT -m lightning_gen.core.cli fit ...`), SLURM (`srun lightning-gen fit ...` in an sbatch script with "
    "`--nodes N --ntasks-per-node M`), or the same command on every node with MASTER_ADDR, MASTER_PORT and NODE_RANK "
    "set (MPI, LSF and Kubeflow jobs are detected too)"
)


def disable_ddp_gradient_sync(trainer: L.Trainer) -> bool:
    """Stop the DDP wrapper (if any) from all-reducing gradients itself. Returns whether one was found.

    This is what `DistributedDataParallel.no_sync()` does for the span of a context; called inside
    `training_step`, it lasts until the step returns, so `manual_backward` leaves the reducer alone.
    Parameters stay identical across processes because DDP broadcasts them from rank 0 when it wraps the
    module and every step then applies the same averaged gradients.
    """
    wrapped = getattr(trainer.strategy, "model", None)
    if isinstance(wrapped, DistributedDataParallel):
        wrapped.require_backward_grad_sync = False
        return True
    return False


def all_reduce_gradients(module: nn.Module) -> None:
    """Average the gradients of `module`'s parameters over all processes, in one flat all-reduce."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    if world == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world)
    with torch.no_grad():
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)


def check_multi_node_launcher(trainer: L.Trainer) -> None:
    """Raise `ConfigError` when `trainer` is to run on several nodes but nothing starts it on the others: no cluster
    environment Lightning detects (torchrun, SLURM, MPI, LSF, Kubeflow) and no MASTER_ADDR/NODE_RANK of a manual
    launch. Lightning would start this node's processes and wait forever for the missing ones."""
    from lightning.fabric.plugins.environments import LightningEnvironment

    num_nodes = int(getattr(trainer, "num_nodes", 1) or 1)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if num_nodes <= 1 or type(environment) is not LightningEnvironment:
        return
    if "NODE_RANK" in os.environ and "MASTER_ADDR" in os.environ:  # launched by hand on every node
        return
    raise ConfigError(
        f"--trainer.num_nodes {num_nodes} needs a launcher that starts the run on every node, and none was found "
        f"(no torchrun, SLURM, MPI, LSF or Kubeflow environment, no MASTER_ADDR and NODE_RANK). Launch it with "
        f"{MULTI_NODE_LAUNCHERS}; or drop --trainer.num_nodes to train on this machine only."
    )


def first_visit_mask(
    trainer: L.Trainer, batch_idx: int, batch_size: int, device: torch.device | str = "cpu", dataloader_idx: int = 0
) -> Tensor:
    """1.0 for each image of this evaluation batch that the whole run sees for the first time, 0.0 for the repeats
    that DDP's `DistributedSampler` adds so that every process gets the same number of images. `(B,)`.

    The sampler pads the global order with its first images up to a multiple of the world size and gives process r
    the positions r, r + W, r + 2W, ...; a position past the dataset's length is a repeat. Averaging with these
    weights counts every evaluation image exactly once, as one process would. Outside DDP: all ones.
    """
    ones = torch.ones(batch_size, device=device)
    if trainer.testing:
        loaders = trainer.test_dataloaders
    elif trainer.validating or trainer.sanity_checking:
        loaders = trainer.val_dataloaders
    else:
        return ones
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    elif not isinstance(loaders, (list, tuple)):
        loaders = [loaders] if loaders is not None else []
    loader = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return ones
    per_batch = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None)
    if per_batch is None:
        raise RuntimeError("first_visit_mask needs evaluation loaders with a fixed batch_size under DDP.")
    local = batch_idx * per_batch + torch.arange(batch_size, device=device)  # this process's positions
    global_position = sampler.rank + local * sampler.num_replicas
    return (global_position < len(sampler.dataset)).float()


@torch.no_grad()
def average_parameters(module: nn.Module) -> None:
    """Replace `module`'s parameters by their average over all processes (after each process changed them on its own
    data, e.g. a data-dependent initialisation), so that every process holds the same weights again."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p.data for p in module.parameters()]
    flat = _flatten_dense_tensors(params)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(dist.get_world_size())
    for param, synced in zip(params, _unflatten_dense_tensors(flat, params)):
        param.copy_(synced)
