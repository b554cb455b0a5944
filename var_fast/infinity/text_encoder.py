"""``TextEncoder``: Flan-T5 prompt features for Infinity through ``transformers``, exactly as upstream's
``tools/run_infinity.py`` ``encode_prompt`` computes them: the tokenizer pads and truncates every prompt to
512 tokens, the encoder's ``last_hidden_state`` is taken in float32 and the padding is dropped
(``TextCondition``: the valid tokens of each prompt one after the other, and their counts).

``transformers`` is imported only here, when a text encoder is built: VAR users do not need it
(``pip install var_fast[infinity]``).

Memory (``offload``): "none" keeps the encoder on the sampling device; "cpu" keeps it in the CPU's memory
and runs it there (only the features move to the device); "free" loads it onto the device for each
``encode`` call and frees it afterwards (``InfinitySampler.sample`` encodes every prompt of a call first,
then samples, so the encoder and the transformer are never on the device together).
"""
from __future__ import annotations

import gc
import os
from typing import Dict, List, Sequence, Union

import torch

from .text_condition import TextCondition

MAX_LENGTH = 512  # upstream encode_prompt: max_length=512, padding='max_length', truncation=True
OFFLOAD_MODES = ("none", "cpu", "free")
INSTALL_HINT = "pip install 'var_fast[infinity]' (or pip install 'transformers>=4.40')"


def require_transformers():
    """The transformers module, or an ImportError saying how to install it."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"Infinity's text encoder (Flan-T5) needs the transformers package: {INSTALL_HINT}") from err
    return transformers


def check_prompts(prompts, name: str = "prompts") -> List[str]:
    """A non-empty list of non-empty strings (a single string is one prompt)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"{name} must be a non-empty list of strings, got {type(prompts).__name__}"
                         + ("" if isinstance(prompts, (list, tuple)) else f" {prompts!r}"[:80]))
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"{name}[{i}] must be a string, got {type(p).__name__}")
        if not p.strip():
            raise ValueError(f"{name}[{i}] is empty; every prompt needs some text")
    return list(prompts)


def check_offload(offload: str) -> str:
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"text encoder offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    return offload


def check_encoder_dir(path: Union[str, os.PathLike]) -> str:
    """A folder in Hugging Face layout: config.json, weights and tokenizer files."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"text encoder {path!r} is not a folder; pass the folder of a T5 encoder in Hugging "
                                f"Face layout (config.json, model weights, tokenizer files), e.g. google/flan-t5-xl")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"text encoder folder {path!r} has no config.json (Hugging Face layout expected)")
    return path


class TextEncoder:
    """Flan-T5 encoder + tokenizer from a Hugging Face folder (``google/flan-t5-xl`` for the published models).

    ``device``: where the features are needed (the sampling device). ``dtype``: the encoder's weights and
    compute; None is float16 when it runs on CUDA (what upstream's ``load_tokenizer`` uses) and float32 on
    the CPU. ``offload``: "none", "cpu" or "free" (module docstring). ``encode`` runs one prompt per forward
    pass, as upstream does, so a prompt's features never depend on the other prompts of the call.
    """

    def __init__(self, path: Union[str, os.PathLike], *, device: Union[str, torch.device] = "cpu",
                 dtype: Union[None, str, torch.dtype] = None, offload: str = "none"):
        from ..precision import resolve_dtype
        require_transformers()
        self.path = check_encoder_dir(path)
        self.device = torch.device(device)
        self.offload = check_offload(offload)
        self.run_device = torch.device("cpu") if offload == "cpu" else self.device
        if dtype is None or dtype == "auto":
            dtype = torch.float16 if self.run_device.type == "cuda" else torch.float32
        self.dtype = resolve_dtype(dtype, self.run_device)
        self.tokenizer = self._load_tokenizer()
        self._model = None
        if offload != "free":
            self._model = self._load_model()

    def __repr__(self) -> str:
        return (f"TextEncoder({self.path!r}, runs on {self.run_device}, dtype={self.dtype}, offload={self.offload!r}, "
                f"loaded={self._model is not None})")

    def _load_tokenizer(self):
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(self.path, legacy=True)  # upstream load_tokenizer
        tokenizer.model_max_length = MAX_LENGTH
        return tokenizer

    def _load_model(self):
        from transformers import T5EncoderModel
        from transformers.utils import logging as hf_logging
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar per load; var_fast says what it loads itself
        try:
            model = T5EncoderModel.from_pretrained(self.path, dtype=self.dtype)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = T5EncoderModel.from_pretrained(self.path, torch_dtype=self.dtype)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
        model.requires_grad_(False)
        return model.eval().to(self.run_device)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self):
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def free(self) -> None:
        """Drop the encoder's weights (the next ``encode`` loads them again)."""
        self._model = None
        gc.collect()
        if self.run_device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.no_grad()
    def encode_one(self, prompt: str) -> TextCondition:
        """One prompt, exactly upstream's ``encode_prompt(tokenizer, encoder, prompt)`` (kv_compact, lens)."""
        tokens = self.tokenizer(text=[prompt], max_length=MAX_LENGTH, padding="max_length", truncation=True,
                                return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.run_device), tokens.attention_mask.to(self.run_device)
        features = self.model(input_ids=ids, attention_mask=mask)["last_hidden_state"].float()
        return TextCondition.from_padded(features, mask)

    @torch.no_grad()
    def encode(self, prompts: Union[str, Sequence[str]]) -> TextCondition:
        """Features of ``prompts`` (each distinct prompt encoded once), on ``self.device``. With offload
        "free" the encoder is loaded for this call and freed at its end."""
        prompts = check_prompts(prompts)
        try:
            done: Dict[str, TextCondition] = {}
            for p in prompts:
                if p not in done:
                    done[p] = self.encode_one(p).to(self.device)
            parts = [done[p] for p in prompts]
            return TextCondition(torch.cat([c.features for c in parts]), [n for c in parts for n in c.lens])
        finally:
            if self.offload == "free":
                self.free()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
