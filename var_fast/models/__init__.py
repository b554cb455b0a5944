from .var import PATCH_NUMS_256, PATCH_NUMS_512, VAR, VARConfig
from .vqvae import VQVAE, VQVAEConfig

__all__ = ["VAR", "VARConfig", "VQVAE", "VQVAEConfig", "PATCH_NUMS_256", "PATCH_NUMS_512"]
