"""AestheticModel: the LAION aesthetic predictor on open_clip, as a Prefect block.

Configures which CLIP image encoder and which aesthetic head score images, and
where their weights are on disk (a checkpoint file, or the Hugging Face hub
cache that open_clip uses). The block does the torch work: `load_model()`
builds the encoder and head once per worker process (cached by configuration) and
`score()` embeds a batch of images, L2-normalises the embeddings and runs them
through the head.

Heads:
- `mlp-l14`: the improved predictor (christophschuhmann/improved-aesthetic-predictor),
  `Linear(768,1024) → Dropout → Linear(1024,128) → Dropout → Linear(128,64) →
  Dropout → Linear(64,16) → Linear(16,1)`, no activations, state-dict keys
  `layers.{0,2,4,6,7}`; on CLIP ViT-L/14 (OpenAI weights, QuickGELU). Scores
  land on the 1-10 mean-rating scale: 5.0 / 6.0 / 6.5 are the usual floors.
- `linear-b32`: LAION-AI/aesthetic-predictor's `Linear(512,1)` (keys `weight`,
  `bias`) on ViT-B/32 — a cheaper option.

torch and open_clip are the `[aesthetic]` extra: they are imported inside the
methods, so the rest of brandforge imports and runs without them. Nothing here
downloads: weights named by a pretrained tag are looked up in the cache only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect.blocks.core import Block
from pydantic import Field

from brandforge.models import BrandforgeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image

HEAD_KINDS = ("mlp-l14", "linear-b32")
# The improved predictor's hidden widths (input width is the CLIP embedding size).
MLP_WIDTHS = (1024, 128, 64, 16)


class AestheticUnavailable(BrandforgeError):
    """The aesthetic model cannot run here: weights missing, or the [aesthetic] extra not installed."""


_cache: dict[tuple, Any] = {}
_cache_lock = threading.Lock()


class AestheticModel(Block):
    """LAION aesthetic predictor: CLIP image embeddings through an aesthetic head."""

    _block_type_name = "Brandforge Aesthetic Model"
    _block_type_slug = "brandforge-aesthetic-model"
    _description = "LAION aesthetic predictor (open_clip encoder + MLP or linear head) used by the aesthetic quality gate."

    model_name: str = Field(
        "ViT-L-14-quickgelu",
        description="open_clip model name. Use a -quickgelu name with OpenAI weights (the predictor was trained on them).",
    )
    pretrained: str | None = Field(
        None,
        description="CLIP weights: a local checkpoint file, or an open_clip pretrained tag (e.g. 'openai') found in cache_dir.",
    )
    cache_dir: str | None = Field(None, description="Hub / open_clip cache folder that holds the weights of a pretrained tag.")
    head_path: str | None = Field(None, description="Aesthetic head weights (.pth state dict), e.g. sac+logos+ava1-l14-linearMSE.pth.")
    head_kind: Literal["mlp-l14", "linear-b32"] = Field("mlp-l14", description="Head layout: 'mlp-l14' (improved predictor) or 'linear-b32'.")
    on_missing_weights: Literal["fail", "skip"] = Field(
        "fail", description="When weights are missing: 'fail' the aesthetic gate (the asset is quarantined) or 'skip' it.",
    )
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda'.")
    batch_size: int = Field(8, ge=1, le=256, description="Images per forward pass.")

    # ------------------------------------------------------------------ weights

    def resolve_weights(self) -> tuple[str, str]:
        """(CLIP checkpoint path, head path), both existing files; AestheticUnavailable naming what is missing."""
        if not self.head_path:
            raise AestheticUnavailable("aesthetic head_path is not set; point it at the predictor's .pth file")
        if not Path(self.head_path).is_file():
            raise AestheticUnavailable(f"aesthetic head weights not found at head_path={self.head_path!r}")
        if not self.pretrained:
            raise AestheticUnavailable("aesthetic pretrained is not set; give a CLIP checkpoint file or a tag cached in cache_dir")
        if Path(self.pretrained).is_file():
            return self.pretrained, self.head_path
        cached = self._cached_tag_file()
        if cached is None:
            raise AestheticUnavailable(
                f"CLIP weights for model_name={self.model_name!r} pretrained={self.pretrained!r} are neither a file "
                f"nor in cache_dir={self.cache_dir!r}; brandforge never downloads them"
            )
        return cached, self.head_path

    def _cached_tag_file(self) -> str | None:
        """The cached checkpoint of an open_clip pretrained tag, looked up without any network access."""
        try:
            from open_clip.pretrained import get_pretrained_cfg
        except ImportError as exc:
            raise AestheticUnavailable("the aesthetic gate needs torch and open_clip: pip install 'brandforge[aesthetic]'") from exc
        cfg = get_pretrained_cfg(self.model_name, self.pretrained or "")
        if not cfg:
            return None
        hub = cfg.get("hf_hub")
        if hub:
            from huggingface_hub import try_to_load_from_cache

            repo_id, filename = os.path.split(hub.rstrip("/")) if hub.rstrip("/").count("/") > 1 else (hub.rstrip("/"), "")
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for name in names:
                found = try_to_load_from_cache(repo_id, name, cache_dir=self.cache_dir)
                if isinstance(found, str) and Path(found).is_file():
                    return found
        url = cfg.get("url")
        if url:
            folder = Path(self.cache_dir or Path.home() / ".cache" / "clip")
            candidate = folder / os.path.basename(url)
            if candidate.is_file():
                return str(candidate)
        return None

    # ------------------------------------------------------------------ model

    def _cache_key(self, allow_random: bool) -> tuple:
        return (self.model_name, self.pretrained, self.cache_dir, self.head_path, self.head_kind, self.device, allow_random)

    def load_model(self, allow_random: bool = False) -> tuple[Any, Any, Any]:
        """(CLIP model, preprocess, head), built once per process for this configuration.

        `allow_random` (benchmarks only) builds missing parts with random
        weights instead of raising: the cost is the same as with real ones.
        """
        key = self._cache_key(allow_random)
        with _cache_lock:
            if key not in _cache:
                _cache[key] = self._build(allow_random)
            return _cache[key]

    def _build(self, allow_random: bool) -> tuple[Any, Any, Any]:
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise AestheticUnavailable("the aesthetic gate needs torch and open_clip: pip install 'brandforge[aesthetic]'") from exc
        try:
            clip_path, head_path = self.resolve_weights()
        except AestheticUnavailable:
            if not allow_random:
                raise
            clip_path, head_path = None, None
        model, _, preprocess = open_clip.create_model_and_transforms(self.model_name, pretrained=clip_path, device=self.device)
        model.eval()
        head = build_head(self.head_kind, embed_dim=int(model.visual.output_dim))
        if head_path:
            state = torch.load(head_path, map_location="cpu", weights_only=True)
            try:
                head.load_state_dict(state)
            except RuntimeError as exc:
                raise AestheticUnavailable(
                    f"head weights at head_path={head_path!r} do not fit head_kind={self.head_kind!r} on "
                    f"{self.model_name} ({model.visual.output_dim}-d embeddings): {exc}"
                ) from exc
        head.to(self.device).eval()
        return model, preprocess, head

    def embed(self, images: list["Image.Image"], allow_random: bool = False):
        """L2-normalised CLIP image embeddings, (n, d) float tensor on CPU."""
        import torch

        model, preprocess, _ = self.load_model(allow_random)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack([preprocess(im.convert("RGB")) for im in images[start:start + self.batch_size]])
                emb = model.encode_image(batch.to(self.device)).float()
                # The predictor was trained on unit-norm embeddings; eps guards an all-zero one.
                out.append(torch.nn.functional.normalize(emb, dim=-1, eps=1e-12).cpu())
        return torch.cat(out) if out else torch.empty(0, int(model.visual.output_dim))

    def score(self, images: list["Image.Image"], allow_random: bool = False) -> list[float]:
        """Aesthetic score of each image (the head's scale: about 1-10 for the LAION heads)."""
        import torch

        if not images:
            return []
        _, _, head = self.load_model(allow_random)
        emb = self.embed(images, allow_random)
        with torch.inference_mode():
            return [float(v) for v in head(emb.to(self.device)).reshape(-1).cpu()]


def build_head(kind: str, embed_dim: int):
    """The aesthetic head for `kind` on `embed_dim`-d embeddings (weights random until loaded)."""
    from torch import nn

    if kind == "linear-b32":
        return nn.Linear(embed_dim, 1)
    if kind == "mlp-l14":
        return improved_predictor_mlp(embed_dim)
    raise ValueError(f"head_kind must be one of {list(HEAD_KINDS)} (got {kind!r})")


def improved_predictor_mlp(embed_dim: int = 768):
    """The improved predictor's MLP: keys `layers.{0,2,4,6,7}`, no activations (the ReLUs are commented out upstream)."""
    from torch import nn

    class _MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w1, w2, w3, w4 = MLP_WIDTHS
            self.layers = nn.Sequential(
                nn.Linear(embed_dim, w1), nn.Dropout(0.2),
                nn.Linear(w1, w2), nn.Dropout(0.2),
                nn.Linear(w2, w3), nn.Dropout(0.1),
                nn.Linear(w3, w4),
                nn.Linear(w4, 1),
            )

        def forward(self, x):
            return self.layers(x)

    return _MLP()
