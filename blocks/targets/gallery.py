"""LocalGallery: the embedded publish target — a folder of images and an index.html.

Each published image sits beside its source ("before") and a JSON sidecar with
its scores and parameters — one per asset: republishing an asset (its recipe
changed) replaces its entry and files rather than adding a second; `index.html` is rebuilt from the sidecars after
every publish, so the page is always whole even if runs overlap.
"""

from __future__ import annotations

import fcntl
import html
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Iterator

from PIL import Image
from pydantic import Field

from brandforge.blocks.targets.base import PublishTarget
from brandforge.models import PublishItem, PublishReceipt, stable_hash


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LocalGallery(PublishTarget):
    """A static gallery folder: images, before/after pairs and scores on one page."""

    _block_type_name = "Brandforge Local Gallery"
    _block_type_slug = "brandforge-local-gallery"
    _description = "Publishes to a local folder with an index.html of before/after pairs and scores."

    target_name: ClassVar[str] = "gallery"

    folder: str = Field("gallery", description="Folder that holds the gallery (created if missing).")
    title: str = "brandforge gallery"

    def destination(self) -> str:
        return str(Path(self.folder).resolve())

    @property
    def root(self) -> Path:
        return Path(self.folder).resolve()

    def _sidecar(self, item: PublishItem) -> Path:
        # One entry per asset (its source URI): a republish after a recipe change replaces it.
        return self.root / item.client / "entries" / f"{stable_hash(item.source_uri)[:32]}.json"

    def _entry(self, item: PublishItem) -> dict | None:
        try:
            return json.loads(self._sidecar(item).read_text())
        except (OSError, ValueError):
            return None

    async def find_existing(self, item: PublishItem) -> PublishReceipt | None:
        entry = self._entry(item)
        if not entry or entry.get("output_key", entry.get("generation_key")) != item.publish_key:
            return None
        return PublishReceipt(target=self.target_name, url=entry["url"], remote_ids={"path": entry["image"]}, already_existed=True)

    async def publish(self, item: PublishItem, replaces: dict | None = None) -> PublishReceipt:
        # `replaces` is not needed: the entry of an asset is found by its source URI.
        existing = await self.find_existing(item)
        if existing:
            return existing
        earlier = self._entry(item)
        folder = self.root / item.client
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{Path(item.name).stem}-{item.publish_key[:12]}"
        image = folder / f"{stem}{Path(item.image_path).suffix}"
        shutil.copyfile(item.image_path, image)
        before = None
        if item.source_path:
            before = folder / f"{stem}-before.jpg"
            with Image.open(item.source_path) as src:
                thumb = src.convert("RGB")
                thumb.thumbnail((1024, 1024))
                thumb.save(before, quality=85)
        extras = {}
        for label, path in item.extra_outputs.items():
            dest = folder / f"{stem}-{label}{Path(path).suffix}"
            shutil.copyfile(path, dest)
            extras[label] = dest.name
        entry = {
            "name": item.name,
            "title": item.title or item.name,
            "generation_key": item.generation_key,
            "output_key": item.publish_key,
            "source_uri": item.source_uri,
            "image": image.name,
            "before": before.name if before else None,
            "extras": extras,
            "scores": item.scores,
            "params": item.params,
            "url": image.as_uri(),
        }
        # Sidecar last: its presence is what `find_existing` trusts.
        tmp = self._sidecar(item).with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(entry, indent=2, default=str))
        tmp.replace(self._sidecar(item))
        if earlier:  # the files of the entry this one replaced
            kept = {entry["image"], entry["before"], *extras.values()}
            for name in {earlier.get("image"), earlier.get("before"), *(earlier.get("extras") or {}).values()} - kept:
                if name:
                    (folder / name).unlink(missing_ok=True)
        self.render_index()
        return PublishReceipt(target=self.target_name, url=entry["url"], remote_ids={"path": str(image)})

    def render_index(self) -> Path:
        """Rebuild index.html from every sidecar (all clients)."""
        with _locked(self.root / ".lock"):
            entries = []
            for sidecar in sorted(self.root.glob("*/entries/*.json")):
                entry = json.loads(sidecar.read_text())
                entry["client"] = sidecar.parent.parent.name
                entries.append(entry)
            index = self.root / "index.html"
            index.write_text(_render(self.title, entries))
            return index


def _fmt_score(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else html.escape(str(value))


def _render(title: str, entries: list[dict]) -> str:
    cards = []
    for e in sorted(entries, key=lambda e: (e["client"], e["name"])):
        rel = f'{html.escape(e["client"])}/'
        params = e.get("params", {})
        scores = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_fmt_score(v)}</td></tr>" for k, v in sorted(e.get("scores", {}).items())
        )
        before = f'<figure><img src="{rel}{html.escape(e["before"])}" alt="before"><figcaption>before</figcaption></figure>' if e.get("before") else ""
        extras = " ".join(f'<a href="{rel}{html.escape(n)}">{html.escape(k)}</a>' for k, n in e.get("extras", {}).items())
        cards.append(
            f"""<article>
  <h2>{html.escape(e["title"])} <small>{html.escape(e["client"])}</small></h2>
  <div class="pair">{before}<figure><img src="{rel}{html.escape(e["image"])}" alt="after"><figcaption>after</figcaption></figure></div>
  <table>{scores}</table>
  <p class="prompt">{html.escape(str(params.get("prompt") or ""))}</p>
  <p class="meta">recipe {html.escape(str(params.get("recipe") or "–"))} · seed {html.escape(str(params.get("seed")))} · key {html.escape(e["generation_key"][:16])} {extras}</p>
</article>"""
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;background:#f6f5f2;color:#222}}
article{{background:#fff;border-radius:8px;padding:1rem;margin:0 0 1.5rem;box-shadow:0 1px 3px #0002}}
.pair{{display:flex;gap:1rem;flex-wrap:wrap}} figure{{margin:0}} img{{max-width:420px;max-height:420px;display:block}}
figcaption{{font-size:.8rem;color:#666}} table{{font-size:.85rem;margin-top:.5rem}} td{{padding:0 .8rem 0 0}}
.meta{{font-size:.8rem;color:#777}} .prompt{{font-style:italic;color:#444;margin:.4rem 0 0}} h2 small{{color:#888;font-weight:normal}}
</style></head><body>
<h1>{html.escape(title)}</h1><p>{len(entries)} published image(s)</p>
{"".join(cards) or "<p>Nothing published yet.</p>"}
</body></html>
"""
