"""Low-rank layer shapes: one layer becomes a short chain of thinner layers.

    svd      Linear(in, out)        -> Linear(in, r) -> Linear(r, out)
             Conv2d 1x1 (in, out)   -> Conv 1x1 (in, r, stride) -> Conv 1x1 (r, out)
    tucker2  Conv2d kxk (in, out)   -> Conv 1x1 (in, r_in) -> Conv kxk (r_in, r_out)
                                       -> Conv 1x1 (r_out, out)
    cp       Conv2d kxk (in, out)   -> Conv 1x1 (in, r) -> depthwise kx1 -> depthwise 1xk
                                       -> Conv 1x1 (r, out)

`factorized_skeleton` builds the chain with untrained weights (the recipe replays it when an
artifact is loaded); `factorize` also fills the weights from the decomposition of the layer's
weight. Torch only here, so loading a model never imports TensorLy.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from slimline.errors import SlimlineError

METHODS = ("svd", "tucker2", "cp")


def max_rank(layer: nn.Module, method: str) -> int:
    """The largest rank that still means something for this layer (full rank)."""
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    out_channels, in_channels, height, width = layer.weight.shape
    if method in ("svd", "tucker2"):
        return min(out_channels, in_channels)
    # A tensor's CP rank never exceeds the product of all its dimensions but the largest.
    dims = [out_channels, in_channels, height, width]
    return math.prod(dims) // max(dims)


def factorizable(layer: nn.Module) -> str | None:
    """Why this layer cannot be factorized, or None if it can."""
    if isinstance(layer, nn.Linear):
        return None
    if not isinstance(layer, nn.Conv2d):
        return f"{type(layer).__name__} is not a Linear or Conv2d layer"
    if layer.groups != 1:
        return f"grouped/depthwise convolution (groups={layer.groups}) is already cheap per channel"
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        return f"padding {layer.padding!r}/{layer.padding_mode} is not supported"
    return None


def method_for(layer: nn.Module, conv_method: str) -> str:
    """The factorization a layer gets: SVD for Linear and 1x1 convs, `conv_method` for kxk."""
    if isinstance(layer, nn.Linear) or tuple(layer.kernel_size) == (1, 1):
        return "svd"
    return conv_method


def _conv(in_channels, out_channels, kernel, *, stride=1, padding=0, dilation=1, groups=1,
          bias=False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, bias=bias)


def factorized_skeleton(layer: nn.Module, method: str, ranks: list[int]) -> nn.Sequential:
    """The chain replacing `layer` at `ranks`, with untrained weights."""
    if method not in METHODS:
        raise SlimlineError(
            f"unknown factorization method '{method}' (known: {', '.join(METHODS)})"
        )
    reason = factorizable(layer)
    if reason:
        raise SlimlineError(f"cannot factorize {type(layer).__name__}: {reason}")
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        if method != "svd":
            raise SlimlineError(f"Linear layers factorize by svd, not {method}")
        (rank,) = ranks
        return nn.Sequential(nn.Linear(layer.in_features, rank, bias=False),
                             nn.Linear(rank, layer.out_features, bias=has_bias))
    out_channels, in_channels = layer.out_channels, layer.in_channels
    (stride_h, stride_w), (pad_h, pad_w) = layer.stride, layer.padding
    (dil_h, dil_w), (kernel_h, kernel_w) = layer.dilation, layer.kernel_size
    if method == "svd":
        if (kernel_h, kernel_w) != (1, 1):
            raise SlimlineError("svd factorizes 1x1 convolutions only (use tucker2 or cp)")
        (rank,) = ranks
        return nn.Sequential(
            _conv(in_channels, rank, 1, stride=layer.stride, padding=layer.padding),
            _conv(rank, out_channels, 1, bias=has_bias),
        )
    if method == "tucker2":
        rank_out, rank_in = ranks
        return nn.Sequential(
            _conv(in_channels, rank_in, 1),
            _conv(rank_in, rank_out, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                  dilation=layer.dilation),
            _conv(rank_out, out_channels, 1, bias=has_bias))
    (rank,) = ranks
    return nn.Sequential(
        _conv(in_channels, rank, 1),
        _conv(
            rank,
            rank,
            (kernel_h, 1),
            stride=(stride_h, 1),
            padding=(pad_h, 0),
            dilation=(dil_h, 1),
            groups=rank,
        ),
        _conv(
            rank,
            rank,
            (1, kernel_w),
            stride=(1, stride_w),
            padding=(0, pad_w),
            dilation=(1, dil_w),
            groups=rank,
        ),
        _conv(rank, out_channels, 1, bias=has_bias),
    )


def svd_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, second) with second @ first the best rank-`rank` approximation of `matrix`.

    The singular values are split evenly (sqrt on each side) so both factors have similar scale,
    which keeps fine-tuning with one learning rate well conditioned.
    """
    left, singular, right = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = singular[:rank].sqrt()
    first = root[:, None] * right[:rank]
    second = left[:, :rank] * root[None, :]
    return first.to(matrix.dtype), second.to(matrix.dtype)


def _tucker2_factors(weight: torch.Tensor, ranks: list[int], seed: int):
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    tl.set_backend("numpy")
    (core, (out_factor, in_factor)), _ = partial_tucker(
        weight.double().numpy(), rank=list(ranks), modes=[0, 1], init="svd", n_iter_max=50,
        random_state=seed)
    return (torch.from_numpy(core).to(weight.dtype), torch.from_numpy(out_factor).to(weight.dtype),
            torch.from_numpy(in_factor).to(weight.dtype))


def _cp_factors(weight: torch.Tensor, rank: int, seed: int):
    import warnings

    import tensorly as tl
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    with (
        warnings.catch_warnings()
    ):  # svd init warns when rank exceeds a mode size; it pads randomly
        warnings.simplefilter("ignore")
        cp = parafac(weight.double().numpy(), rank, init="svd", n_iter_max=200, tol=1e-7,
                     random_state=seed)
    weights, (out_f, in_f, height_f, width_f) = cp.weights, cp.factors
    to_torch = lambda array: torch.from_numpy(array).to(weight.dtype)  # noqa: E731
    return to_torch(out_f * weights[None, :]), to_torch(in_f), to_torch(height_f), to_torch(width_f)


@torch.no_grad()
def factorize(layer: nn.Module, method: str, ranks: list[int], seed: int = 0) -> nn.Sequential:
    """`layer` as a low-rank chain at `ranks`, weights from SVD / Tucker-2 (HOOI) / CP-ALS."""
    chain = factorized_skeleton(layer, method, ranks)
    weight = layer.weight.detach()
    if method == "svd":
        first, second = svd_factors(weight.flatten(1), ranks[0])
        chain[0].weight.copy_(first.view_as(chain[0].weight))
        chain[1].weight.copy_(second.view_as(chain[1].weight))
    elif method == "tucker2":
        core, out_factor, in_factor = _tucker2_factors(weight, ranks, seed)
        chain[0].weight.copy_(in_factor.T[:, :, None, None])
        chain[1].weight.copy_(core)
        chain[2].weight.copy_(out_factor[:, :, None, None])
    else:
        out_factor, in_factor, height_factor, width_factor = _cp_factors(weight, ranks[0], seed)
        chain[0].weight.copy_(in_factor.T[:, :, None, None])
        chain[1].weight.copy_(height_factor.T[:, None, :, None])
        chain[2].weight.copy_(width_factor.T[:, None, None, :])
        chain[3].weight.copy_(out_factor[:, :, None, None])
    if layer.bias is not None:
        chain[-1].bias.copy_(layer.bias)
    return chain.train(layer.training)
