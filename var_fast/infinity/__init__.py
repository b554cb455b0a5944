"""Infinity (FoundationVision/Infinity) text-to-image models on stock PyTorch: the transformer, its BSQ VAE,
loading, scale schedules and the reference sampler (upstream's autoregressive_infer_cfg, bit for bit)."""
from .bsq_vae import BSQVAE
from .config import BSQVAEConfig, InfinityConfig, bsq_vae_config_from_state_dict, infinity_config_from_state_dict
from .loading import load_bsq_vae, load_infinity_files, load_infinity_transformer
from .reference_sampler import InfinityOutput, infer_reference
from .schedules import PUBLISHED_RATIOS, image_size, scale_schedule
from .text_condition import TextCondition
from .transformer import Infinity

__all__ = ["BSQVAE", "BSQVAEConfig", "Infinity", "InfinityConfig", "InfinityOutput", "PUBLISHED_RATIOS", "TextCondition",
           "bsq_vae_config_from_state_dict", "image_size", "infer_reference", "infinity_config_from_state_dict",
           "load_bsq_vae", "load_infinity_files", "load_infinity_transformer", "scale_schedule"]
