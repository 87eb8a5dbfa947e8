"""Graph convolution (Kipf & Welling, ICLR 2017) with `torch.sparse`, no scatter library.

- `normalized_adjacency(edge_index, num_nodes)`: the renormalised adjacency D^-1/2 (A + I) D^-1/2 of an undirected
  graph as a sparse `(N, N)` COO tensor, computed once per graph (the datamodule does it).
- `GraphConv`: one layer H' = Â H W (+ b); without an adjacency it is the dense layer H W (+ b) of the MLP baseline.
  H may be sparse (bag-of-words features: Cora's are 1.3% non-zero).
- `feature_dropout`: dropout of a dense or sparse H; on a sparse one only its stored values are drawn (Kipf &
  Welling's sparse dropout: the same distribution, zeros stay zero, at the cost of the non-zeros, not of N x F).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def normalized_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """(2, E) int64 edges -> the `(N, N)` float32 sparse COO tensor D^-1/2 (A + I) D^-1/2 (coalesced).

    A is the symmetric 0/1 adjacency: each edge counts in both directions, duplicates and self-loops are dropped,
    then every node gets one self-loop (the "renormalisation trick"); D is the diagonal of the row sums of A + I, so
    no degree is 0."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    loops = torch.arange(num_nodes, device=edge_index.device)
    n = num_nodes
    flat = torch.unique(torch.cat([src * n + dst, dst * n + src, loops * n + loops]))  # sorted, each entry once
    rows, cols = flat // n, flat % n  # the entries of A + I, in row-major order
    scale = torch.bincount(rows, minlength=n).float().rsqrt()  # D^-1/2: degrees of A + I, all >= 1
    values = scale[rows] * scale[cols]  # (D^-1/2 (A + I) D^-1/2)_ij = 1 / sqrt(d_i d_j)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), is_coalesced=True,
                                   check_invariants=False)


def feature_dropout(h: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout(h, p, training)`, also for a sparse COO or CSR `h` (dropout of its stored values)."""
    if h.layout == torch.strided:
        return F.dropout(h, p, training)
    if not training or p == 0:
        return h
    if h.layout == torch.sparse_csr:
        values = F.dropout(h.values(), p, True)  # (nnz,): zeros stay zero, kept values scaled by 1 / (1 - p)
        return torch.sparse_csr_tensor(h.crow_indices(), h.col_indices(), values, h.shape, check_invariants=False)
    values = F.dropout(h.values(), p, True)
    return torch.sparse_coo_tensor(h.indices(), values, h.shape, is_coalesced=h.is_coalesced(), check_invariants=False)


class GraphConv(nn.Module):
    """Graph convolution H' = Â H W + b (Kipf & Welling's propagation rule with the renormalised adjacency Â).

    W is initialised as Glorot & Bengio (uniform, the paper's), b at zero. `forward(h, adjacency=None)` skips the
    propagation: the dense layer H W + b, the same weights and initialisation (the MLP baseline).

    Under autocast the dense product H W runs in the autocast dtype; the sparse product runs in float32 with autocast
    off, because torch's sparse kernels do not all take bfloat16 (CPU CSR: not implemented) and a sum over a node's
    neighbours is where rounding would add up. A sparse H (bag-of-words features) is multiplied the same way.

    Args:
        in_features: size of each node's input vector.
        out_features: size of each node's output vector.
        bias: add a learned bias b.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, h: Tensor, adjacency: Tensor | None = None) -> Tensor:
        if h.layout != torch.strided:  # sparse COO or CSR
            with torch.autocast(h.device.type, enabled=False):
                out = torch.sparse.mm(h.float(), self.weight.float())  # (N, in) sparse -> (N, out)
        else:
            out = h @ self.weight  # (N, in) -> (N, out): the cheap order, Â (H W), with out < in
        if adjacency is not None:
            with torch.autocast(out.device.type, enabled=False):
                out = torch.sparse.mm(adjacency, out.float())  # (N, N) sparse @ (N, out) -> (N, out), float32
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}, bias={self.bias is not None}"


__all__ = ["GraphConv", "feature_dropout", "normalized_adjacency"]
