"""AestheticModel: the LAION aesthetic predictor on open_clip, as a Prefect block.

Configures which CLIP image encoder and which aesthetic head score images, and
where their weights are on disk (a checkpoint file, or the Hugging Face hub
cache that open_clip uses). The block does the torch work: `load_model()`
builds the encoder and head once per worker process (a process-wide cache keyed
by the settings that decide the model; concurrent first calls build it once) and
`score()` embeds a batch of images, L2-normalises the embeddings and runs them
through the head.

Throughput on a worker that scores several assets at once:
- `shared_batches` (default on): `score()` preprocesses its images in the
  caller's thread and hands the tensors to one process-wide `MicroBatcher` per
  model, which runs the candidates of concurrent assets together, at most
  `batch_size` per forward pass, one pass at a time (N assets no longer run N
  forward passes that fight over the same cores). A lone caller waits at most
  `batch_wait_ms` before its pass starts.
- `precision="int8"`: dynamic int8 quantization of the Linear layers of the
  image encoder's transformer MLPs (CPU only; attention and the head stay
  fp32). `bench/gates.py` measures its speed and its score
  agreement with fp32. Activation scales are computed per forward pass, so an
  int8 score moves slightly with the images that share its batch.

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

import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from brandforge.blocks.microbatch import MicroBatcher
from brandforge.models import BrandforgeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image

HEAD_KINDS = ("mlp-l14", "linear-b32")
# The improved predictor's hidden widths (input width is the CLIP embedding size).
MLP_WIDTHS = (1024, 128, 64, 16)


class AestheticUnavailable(BrandforgeError):
    """The aesthetic model cannot run here: weights missing, or the [aesthetic] extra not installed."""


# Process-wide state: loaded models by configuration, a build lock per
# configuration (a 3 s ViT-L build must not block lookups of other models), and
# the shared batchers. Reset in a forked child, whose parent threads are gone.
_cache: dict[tuple, Any] = {}
_cache_lock = threading.Lock()
_build_locks: dict[tuple, threading.Lock] = {}
_batchers: dict[tuple, MicroBatcher] = {}


def _after_fork() -> None:
    global _cache_lock
    _cache_lock = threading.Lock()
    _build_locks.clear()
    _batchers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


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
    precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="Image encoder arithmetic: 'fp32', or 'int8' (dynamic int8 quantization of its MLP layers; CPU only). "
        "Check the agreement with fp32 on your weights with bench/gates.py before switching.",
    )
    shared_batches: bool = Field(
        True, description="Score the images of concurrent callers (assets) in this process together, batch_size per forward pass.",
    )
    batch_wait_ms: float = Field(
        5.0, ge=0, le=60_000, description="With shared_batches: how long the first waiting image waits for others before its pass starts.",
    )

    @model_validator(mode="after")
    def _int8_on_cpu(self) -> "AestheticModel":
        if self.precision == "int8" and not self.device.startswith("cpu"):
            raise ValueError(f"precision='int8' (dynamic quantization) runs on the CPU only, not device={self.device!r}")
        return self

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
        """The settings that decide the loaded model (not batch_size, thresholds or batching)."""
        return (self.model_name, self.pretrained, self.cache_dir, self.head_path, self.head_kind, self.device,
                self.precision, allow_random)

    def load_model(self, allow_random: bool = False) -> tuple[Any, Any, Any]:
        """(CLIP model, preprocess, head), built once per process for this configuration.

        Threads that ask for the same configuration at once wait for one build;
        a failed build (missing weights) is not cached, so fixing the files
        takes effect on the next call. `allow_random` (benchmarks only) builds
        missing parts with random weights instead of raising: the cost is the
        same as with real ones.
        """
        key = self._cache_key(allow_random)
        with _cache_lock:
            if key in _cache:
                return _cache[key]
            build_lock = _build_locks.setdefault(key, threading.Lock())
        with build_lock:
            with _cache_lock:
                if key in _cache:
                    return _cache[key]
            built = self._build(allow_random)
            with _cache_lock:
                _cache[key] = built
            return built

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
        if self.precision == "int8":
            model.visual = quantize_encoder(model.visual)
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
        """Aesthetic score of each image (the head's scale: about 1-10 for the LAION heads).

        With `shared_batches`, the forward passes are shared with the other
        threads of this process that score images with the same model.
        """
        if not images:
            return []
        model, preprocess, head = self.load_model(allow_random)
        pixels = [preprocess(im.convert("RGB")) for im in images]
        if self.shared_batches:
            return self.batcher(allow_random)(pixels)
        return [s for start in range(0, len(pixels), self.batch_size)
                for s in forward_scores(model, head, pixels[start:start + self.batch_size], self.device)]

    def batcher(self, allow_random: bool = False) -> MicroBatcher:
        """The process-wide batcher of this model, batch size and wait (created on first use)."""
        key = (self._cache_key(allow_random), self.batch_size, self.batch_wait_ms)
        with _cache_lock:
            found = _batchers.get(key)
        if found is not None:
            return found
        model, _, head = self.load_model(allow_random)
        device = self.device

        def run(pixels: list) -> list[float]:
            return forward_scores(model, head, pixels, device)

        with _cache_lock:
            return _batchers.setdefault(key, MicroBatcher(run, self.batch_size, self.batch_wait_ms / 1000, name=f"aesthetic-{self.model_name}"))






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



def forward_scores(model: Any, head: Any, pixels: list, device: str) -> list[float]:
    """One forward pass: preprocessed image tensors → encoder → unit-norm embeddings → head → scores."""
    import torch

    with torch.inference_mode():
        emb = model.encode_image(torch.stack(pixels).to(device)).float()
        # The predictor was trained on unit-norm embeddings; eps guards an all-zero one.
        emb = torch.nn.functional.normalize(emb, dim=-1, eps=1e-12)
        return [float(v) for v in head(emb).reshape(-1).cpu()]


def quantize_encoder(visual: Any) -> Any:
    """The image encoder with the Linear layers of its transformer MLPs dynamically quantized to int8.

    The MLPs hold two thirds of the encoder's multiply-adds. The attention
    projections stay fp32: quantizing them too made ViT-L/14 ~1.4x faster
    still but doubled the score error (0.084 vs 0.030 on the 1-10 scale,
    bench/gates.py setup). Weights are int8 per output channel; activations
    are quantized per pass over their full 8-bit range where the CPU has VNNI
    (torch's default 7-bit range guards against int16 overflow on older AVX2
    kernels, and doubles the error).
    """
    import warnings

    import torch
    from torch import nn
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, module in visual.named_modules()
            if isinstance(module, nn.Linear) and ".mlp." in f".{name}"}
    with warnings.catch_warnings():
        # torch >= 2.10 flags its quantized tensors as deprecated (torchao is the successor); they still work.
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated", category=DeprecationWarning)
        mapping = {nn.Linear: full_range_dynamic_linear_class()} if cpu_has_vnni() else None
        return quantize_dynamic(visual, spec, dtype=torch.qint8, mapping=mapping)


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether the CPU multiplies int8 into int32 accumulators (AVX512-VNNI, AVX-VNNI or AMX): no overflow with 8-bit activations."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@functools.cache
def full_range_dynamic_linear_class() -> type:
    """torch's dynamic int8 Linear, with activations over the full 8-bit range (VNNI CPUs only)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class FullRangeDynamicLinear(DynamicLinear):
        def forward(self, x):
            import torch

            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False).to(x.dtype)

        def _get_name(self) -> str:
            return "FullRangeDynamicQuantizedLinear"

    return FullRangeDynamicLinear
