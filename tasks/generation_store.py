"""The generation store: a provider's raw outputs, kept under their generation key.

A generation key hashes only what decides the provider's pixels (source bytes,
provider, model, the provider-facing parameters), never the post-processing
chain, gates, review band or target. So any later run that needs the same
generation — a changed chain or gate, a retry after a publish failure, a rerun
after a crash once the job had finished — takes it from here: no provider call,
nothing paid. Recipe changes that do not touch generation redo only
post-processing, gates and publish.

Layout (the work folder by default, one tree per client — a client reads only
its own): `<root>/<client>/generations/<key[:2]>/<key>/raw-<i>.<ext>` and
`generation.json` (job ids, cost, provider, model, seed). The record is written
last and atomically: its presence means every image is whole.

Why not Prefect's task cache: a cached result would hold paths to images that
live outside it, the cache key space is the Prefect home's (shared by every
work folder and test), and the catalog's bookkeeping reads the store without a
task run. This is the smallest store that keeps the raw bytes and the record
together.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


from brandforge.blocks.providers.base import sniff_mime
from brandforge.models import GenerationResult, GenerationRequest, stable_hash


def generation_key(source_key: str, request: GenerationRequest, provider: str, model: str, template: str | None = None) -> str:
    """The content address of a generation: what decides the provider's pixels, and nothing else.

    The request's parameters as the provider receives them (prompt, negative prompt, seed,
    strength, steps, sizes, batch size, which ones were asked for explicitly, LoRAs and control),
    the source's content key (not its path in some work folder), the provider, the model and the
    prompt template (name@version) that wrote the prompt. A control map computed from the source enters by
    its bytes' hash (not its file's path). LoRAs, control and template are left out
    while unused, so requests without them keep the keys they always had."""
    params = request.model_dump(exclude={"source_image"})
    for name in ("loras", "control"):
        if not params.get(name):
            params.pop(name, None)
    if params.get("control", {}).get("map_sha256"):  # a map computed from the source: its bytes, not its work path
        params["control"] = {k: v for k, v in params["control"].items() if k != "image"}
    key = {"source": source_key, "provider": provider, "model": model, "params": params}
    if template:
        key["template"] = template
    return stable_hash(key)


class GenerationStore:
    """Raw outputs by generation key under `root` (see the module docstring)."""

    RECORD = "generation.json"

    def __init__(self, folder: str | Path):
        self.root = Path(folder)

    @classmethod
    def for_client(cls, work_dir: str | Path, client: str) -> "GenerationStore":
        return cls(Path(work_dir) / client / "generations")

    def folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> GenerationResult | None:
        """The stored generation, as a result that cost nothing now; None when absent or incomplete."""
        record = self.folder(key) / self.RECORD
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        images = [str(self.folder(key) / name) for name in data.get("images", [])]
        if not images or not all(Path(p).is_file() for p in images):
            return None
        return GenerationResult(
            images=images, provider=data["provider"], model=data["model"], job_ids=data.get("job_ids", []),
            seed=data.get("seed"), cost_usd=0.0, generation_key=key, from_store=True, reported_seed=data.get("reported_seed"),
        )

    def put(self, key: str, outputs: list[bytes], *, provider: str, model: str, job_ids: list[str],
            cost_usd: float, seed: int | None, reported_seed: int | None = None) -> list[str]:
        """Write the provider's files as they came (atomically each), then the record; returns their paths.

        The bytes are not decoded and re-encoded: the store keeps exactly what was paid for, and
        a PNG encode per output was the largest CPU cost of a hosted-provider catalog."""
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        names = write_outputs_verbatim(folder, outputs)
        record = {"images": names, "provider": provider, "model": model, "job_ids": job_ids,
                  "cost_usd": cost_usd, "seed": seed, **({"reported_seed": reported_seed} if reported_seed is not None else {})}
        fd, tmp_name = tempfile.mkstemp(prefix=".record-", dir=folder)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        Path(tmp_name).replace(folder / self.RECORD)
        return [str((folder / n).resolve()) for n in names]


_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def output_name(i: int, data: bytes) -> str:
    """`raw-<i>.<ext>`, the extension from the file's own signature (providers send PNG, JPEG or WebP)."""
    return f"raw-{i}.{_EXTENSIONS.get(sniff_mime(data), 'img')}"


def write_outputs_verbatim(folder: Path, outputs: list[bytes]) -> list[str]:
    """Each output file written whole or not at all (temp file + rename); returns the names."""
    names = []
    for i, data in enumerate(outputs):
        name = output_name(i, data)
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)
        names.append(name)
    return names
