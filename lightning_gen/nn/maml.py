"""The networks of Finn, Abbeel & Levine's MAML paper (ICML 2017), written so that `torch.func.functional_call` can
run them with any set of weights (plain modules, no state besides the weights).

`ConvNet`: few-shot image classification, the paper's four blocks of 3x3 convolution (64 filters), batch norm,
ReLU, and either a stride of 2 (the paper's Omniglot network, `pool="stride"`) or 2x2 max-pooling
(`pool="max"`, its MiniImagenet network); then the feature map averaged over space (the paper's Omniglot code,
`tf.reduce_mean(hidden4, [1, 2])`) and a linear layer to the N classes of a task. On 28x28 Omniglot the sides are
28 -> 14 -> 7 -> 4 -> 2. Smaller images get fewer blocks, so that the last keeps at least 2x2 positions (8x8 digits:
8 -> 4 -> 2, two blocks): batch norm over a 1-shot support set at 1x1 would normalise each channel over N values.

Batch norm normalises with the statistics of the batch it is given and keeps no running statistics
(`track_running_stats=False`): in MAML that batch is one task's support or query set, at meta-train and at
meta-test alike (the paper's transductive setting). `running_stats=True` builds PyTorch's default batch norm
instead, which `eval()` switches to running statistics gathered over other tasks (shown wrong in the tests).

`SineMLP`: the sinusoid-regression network, 1 -> 40 -> 40 -> 1 with ReLU.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

Pool = Literal["stride", "max"]


def maml_block(in_channels: int, out_channels: int, pool: Pool, running_stats: bool) -> nn.Sequential:
    """3x3 convolution (stride 2 for `pool="stride"`), batch norm, ReLU, then 2x2 max-pooling for `pool="max"`. The
    convolution has no bias: batch norm subtracts the mean, so a bias would get a zero gradient (which Adam turns
    into steps of rounding noise)."""
    stride = 2 if pool == "stride" else 1
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),  # batch norm's shift is the bias
        nn.BatchNorm2d(out_channels, track_running_stats=running_stats),
        nn.ReLU(),
    ]
    if pool == "max":
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """(B, C, H, W) images -> (B, ways) logits (see the module's docstring).

    Args:
        image_shape: (channels, height, width) of the images.
        ways: N, the classes of a task.
        filters: channels of every block (64 in the paper for Omniglot).
        blocks: most convolution blocks (4 in the paper); fewer when the images are small (see above).
        pool: `stride` (stride-2 convolutions, the paper's Omniglot network) or `max` (2x2 max-pooling).
        running_stats: PyTorch's default batch norm with running statistics (for comparison only).
    """

    def __init__(self, image_shape: tuple[int, int, int], ways: int, filters: int = 64, blocks: int = 4,
                 pool: Pool = "stride", running_stats: bool = False) -> None:
        super().__init__()
        channels, side = image_shape[0], min(image_shape[1:])
        depth = 1
        while depth < blocks and -(-side // 2 ** (depth + 1)) >= 2:  # the side after depth + 1 halvings (rounded up)
            depth += 1
        self.features = nn.Sequential(*[maml_block(channels if i == 0 else filters, filters, pool, running_stats)
                                        for i in range(depth)])
        self.head = nn.Linear(filters, ways)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)  # (B, C, H, W) -> (B, filters, H / 16, W / 16)
        return self.head(h.mean((2, 3)))  # (B, filters) -> (B, ways)


class SineMLP(nn.Module):
    """(B, 1) inputs -> (B, 1) outputs: `layers` hidden layers of `hidden` units with ReLU (1 -> 40 -> 40 -> 1)."""

    def __init__(self, hidden: int = 40, layers: int = 2, inputs: int = 1, outputs: int = 1) -> None:
        super().__init__()
        sizes = [inputs] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            body += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*body, nn.Linear(sizes[-1], outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, 1) -> (B, 1)


def has_running_stats(net: nn.Module) -> bool:
    """Whether any batch norm of `net` keeps running statistics (which `eval()` would use instead of the batch's)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in net.modules())


__all__ = ["ConvNet", "Pool", "SineMLP", "has_running_stats", "maml_block"]
