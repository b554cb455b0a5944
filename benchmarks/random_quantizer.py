"""A reference quantizer with random codes in the published VQVAE's layout (four shared Phi layers), and
the stacked Phi weights the native ops take: the setup of both quantization benchmarks."""
from __future__ import annotations

import torch

from var_fast.models.quantizer import MultiScaleQuantizer, phi_index


def random_quantizer(device, patch_nums, V: int = 4096, C: int = 32):
    """(quantizer, Phi weights (K, C, C, 3, 3), Phi biases (K, C), Phi index per scale)."""
    with torch.device(device):
        q = MultiScaleQuantizer(V, C, patch_nums, quant_resi=0.5, share_quant_resi=4).eval()
    with torch.no_grad():
        q.embedding.weight.normal_()
    layers = q.quant_resi.layers()
    weights = torch.stack([layer.weight.detach() for layer in layers]).contiguous()
    biases = torch.stack([layer.bias.detach() for layer in layers]).contiguous()
    index = [phi_index(si, len(patch_nums), len(layers)) for si in range(len(patch_nums))]
    return q, weights, biases, index
