"""Bounds where input enters: templates without format specs, prompt and name caps, names refused early."""

from __future__ import annotations

import pytest
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket
from pydantic import ValidationError

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.targets.s3 import S3Target
from brandforge.models import AssetRef, AssetRejected, GenerationRequest, PublishItem, name_problem
from brandforge.tasks.load import load_asset


@pytest.mark.parametrize("template,said", [
    ("{subject:>200000000}", "format specs and conversions are not allowed"),
    ("{style!r} of {subject}", "format specs and conversions are not allowed"),
    ("{subject.__class__}", "unknown slots"),
    ("{subject[0]}", "unknown slots"),
])
def test_prompt_template_slots_take_no_format_specs(template, said):
    with pytest.raises(ValidationError, match=said):
        ClientProfile(client_id="acme", prompt_template=template)


@pytest.mark.parametrize("layout,said", [
    ("{client}/{name:>200000000}.{ext}", "the only format allowed"),
    ("{client}/{generation_key:.0}.{ext}", "the only format allowed"),
    ("{client}/{generation_key:.4}.{ext}", "the only format allowed"),
    ("{client}/{recipe!r}/{generation_key}.{ext}", "conversions are not allowed"),
    ("{client}/{asset_key:x<40}.{ext}", "the only format allowed"),
])
def test_key_layout_slots_take_only_a_key_shortening(layout, said):
    with pytest.raises(ValidationError, match=said):
        S3Target(bucket=S3Bucket(bucket_name="b"), key_layout=layout)


def test_default_layout_stands_and_every_slot_is_sanitised():
    target = S3Target(bucket=S3Bucket(bucket_name="b"), key_layout="{client}/{recipe}/{name}-{generation_key:.12}.{ext}")
    item = PublishItem(client="acme", name="../../etc/x y\u202e.jpg", generation_key="g" * 64, image_path="/tmp/a.jpg",
                       source_uri="file:///tmp/a.jpg", params={"recipe": "../../../root"})
    key = target.object_key(item)
    assert key == "acme/root/x-y-gggggggggggg.jpg"
    assert ".." not in key and "\u202e" not in key
    S3Target(bucket=S3Bucket(bucket_name="b"))  # the default layout's {asset_key:.16}-{generation_key:.12} stays valid


@pytest.mark.parametrize("field", ["prompt", "prompt_2", "negative_prompt"])
def test_prompts_are_capped(field):
    values = {"source_image": "file:///x.png", "prompt": "a mug", "negative_prompt": "blurry", field: "x" * 2001}
    with pytest.raises(ValidationError, match=f"{field} is 2001 characters; at most 2000"):
        GenerationRequest(**values)


@pytest.mark.parametrize("name,said", [
    ("a\x00b.jpg", "U+0000"), ("line\nbreak.jpg", "U+000A"), ("evil\u202egpj.exe", "U+202E"),
    ("x" * 241, "1-240 characters"), ("", "1-240 characters"), ("tab\there.jpg", "U+0009"),
])
def test_bad_names_are_refused_at_load_before_any_byte_is_read(tmp_path, name, said):
    assert said in name_problem(name)
    storage = LocalFileSystem(basepath=str(tmp_path))
    with pytest.raises(AssetRejected, match="source name .* refused"):
        load_asset.fn(AssetRef(client="acme", uri=(tmp_path / "missing.jpg").as_uri(), name=name), storage, str(tmp_path))


def test_ordinary_names_pass():
    for name in ("red mug.jpg", "Müsli-Schale_01.webp", "カップ.png", "shoes/sneaker.jpeg"):
        assert name_problem(name) is None


def test_a_multi_frame_webp_is_noted():
    import io

    from PIL import Image

    from brandforge.tasks.load import normalise_image

    frames = [Image.new("RGB", (64, 64), (i * 6, 0, 0)) for i in range(42)]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    _, fmt, notes = normalise_image(buf.getvalue())
    assert fmt == "WebP" and "multi-frame file (42 frames): first frame used" in notes
