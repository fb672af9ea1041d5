"""Convolution + activation fusion for CPU inference.

HDRUNet follows most convolutions with a ReLU or LeakyReLU. Run one after the other, each
activation is a pass of its own over a full-resolution feature map (a 1060x1900 frame's
64 channels are 0.5 GB in float32), which costs time on a CPU where the convolution
itself does not. oneDNN applies the activation inside the convolution, to each output
while it is still in cache. :func:`fuse_conv_activations` rewrites a network's traced
graph (``torch.fx``) so that every convolution whose only user is a ReLU / LeakyReLU
(directly, or through a ``PixelShuffle``, with which the activation commutes) becomes one
:class:`ConvActivation`. In float32 the result is bit for bit that of the network as
written: only convolutions that PyTorch too computes with oneDNN are fused
(:func:`torch_runs_onednn`; the others, on small inputs, keep PyTorch's native kernel). In
bf16 the activation sees the float32 accumulator before rounding, so results differ by
bf16 rounding.

The fused path is oneDNN's own operator (the one ``torch.compile`` uses on CPUs); where it
is missing, or the input needs gradients, lives on another device or is being exported,
:class:`ConvActivation` computes the convolution and the activation one after the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

_FUSED = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
_FUSED_DTYPES = (torch.float32, torch.bfloat16)
INT32_LIMIT = 2**31 - 1
"""Elements of a tensor from which PyTorch indexes convolutions in 64 bits (not oneDNN)."""


def fused_conv_available() -> bool:
    """Whether this torch build has oneDNN's fused convolution + activation operator."""
    return _FUSED is not None and torch.backends.mkldnn.is_available()


def torch_runs_onednn(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether PyTorch itself computes float32 ``conv(x)`` with oneDNN on a CPU (its own
    rule, ``ConvParams::use_mkldnn`` in ATen's Convolution.cpp); elsewhere it uses a
    native kernel whose sums round differently. Fusing only these keeps float32 results
    bit for bit: small inputs of batch 1 (under 20,480 values) and, single-threaded, 1x1
    convolutions of batches under 16 stay unfused."""
    if not torch.backends.mkldnn.enabled:  # turned off by the user: PyTorch's own kernels
        return False
    kernel_h, kernel_w = conv.kernel_size
    batch = x.shape[0]
    outputs = batch * conv.out_channels * x.shape[-2] * x.shape[-1]  # at most, stride 1
    if max(x.numel(), outputs) >= INT32_LIMIT:  # PyTorch's 64-bit indexing path
        return False
    pointwise = kernel_h == 1 and kernel_w == 1
    strided_or_dilated = any(s > 1 for s in conv.stride) or any(d > 1 for d in conv.dilation)
    if pointwise and not strided_or_dilated and batch < 16 and torch.get_num_threads() <= 1:
        return False
    return conv.groups > 1 or (kernel_h > 3 and kernel_w > 3) or batch > 1 or x.numel() > 20480


class ConvActivation(nn.Module):
    """``activation(conv(x))`` in one oneDNN call where it can: (B, C, H, W) -> (B, C', H', W').

    Holds the original ``conv`` (its parameters are shared, not copied) and an ``nn.ReLU``
    or ``nn.LeakyReLU``. ``shuffle`` > 1 applies ``PixelShuffle(shuffle)`` after the
    activation (the graph's ``conv -> PixelShuffle -> activation``, reordered: an
    element-wise activation commutes with the shuffle).
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module, shuffle: int = 1) -> None:
        super().__init__()
        if not isinstance(activation, _ACTIVATIONS):
            raise TypeError(f"expected ReLU or LeakyReLU, got {type(activation).__name__}")
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError("ConvActivation needs numeric zero padding")
        self.conv = conv
        self.activation = activation
        self.shuffle = shuffle
        if isinstance(activation, nn.LeakyReLU):
            self._attr, self._scalars = "leaky_relu", [activation.negative_slope]
        else:
            self._attr, self._scalars = "relu", []

    def _fusable(self, x: torch.Tensor, dtype: torch.dtype) -> bool:
        needs_grad = x.requires_grad or self.conv.weight.requires_grad
        return (
            _FUSED is not None
            and x.device.type == "cpu"
            and dtype in _FUSED_DTYPES
            and (dtype != torch.float32 or torch_runs_onednn(x, self.conv))
            and not (torch.is_grad_enabled() and needs_grad)
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling()
            and not torch.onnx.is_in_onnx_export()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the operator has no autocast rule: it gets the inputs cast as autocast would
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        fusable = self._fusable(x, dtype)
        out = self._fused(x, dtype) if fusable else self.activation(self.conv(x))
        return F.pixel_shuffle(out, self.shuffle) if self.shuffle > 1 else out

    def _fused(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        conv = self.conv
        bias = None if conv.bias is None else conv.bias.to(dtype)
        with torch.autocast("cpu", enabled=False):
            return _FUSED(
                x.to(dtype),
                conv.weight.to(dtype),
                bias,
                list(conv.padding),
                list(conv.stride),
                list(conv.dilation),
                conv.groups,
                self._attr,
                self._scalars,
                "",
            )


def fuse_conv_activations(
    module: nn.Module, concrete_args: dict[str, object] | None = None
) -> fx.GraphModule:
    """``module`` traced by ``torch.fx`` with each conv -> activation pair as a
    :class:`ConvActivation`. The parameters are shared with ``module``.

    Args:
        module: a network whose forward ``torch.fx.symbolic_trace`` can trace.
        concrete_args: arguments fixed while tracing (e.g. optional inputs left ``None``).

    Returns:
        A ``GraphModule`` computing what ``module`` computes, with attribute
        ``fused_pairs``: how many pairs were fused.
    """
    graph_module = fx.symbolic_trace(module, concrete_args=concrete_args)
    modules = dict(graph_module.named_modules())

    def single_user_module(node: fx.Node, kinds: tuple[type, ...]) -> fx.Node | None:
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            return None
        return users[0] if isinstance(modules[users[0].target], kinds) else None

    fused = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) is not nn.Conv2d:
            continue
        shuffle = single_user_module(node, (nn.PixelShuffle,))
        act = single_user_module(shuffle if shuffle is not None else node, _ACTIVATIONS)
        if act is None:
            continue
        factor = modules[shuffle.target].upscale_factor if shuffle is not None else 1
        name = f"fused_{fused}"
        graph_module.add_submodule(
            name, ConvActivation(modules[node.target], modules[act.target], factor)
        )
        with graph_module.graph.inserting_after(act):
            replacement = graph_module.graph.call_module(name, (node.args[0],))
        act.replace_all_uses_with(replacement)
        for dead in (act, shuffle, node):
            if dead is not None:
                graph_module.graph.erase_node(dead)
        fused += 1
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.fused_pairs = fused
    return graph_module
