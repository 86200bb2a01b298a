"""A catalog in S3 (moto's server on 127.0.0.1, through prefect-aws S3Bucket) is listed and loaded."""

from __future__ import annotations

import pytest

from brandforge.blocks.ledger import Ledger
from brandforge.flows.catalog_refresh import catalog_refresh
from tests.conftest import DEMO_CATALOG

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_catalog_refresh_reads_an_s3_bucket(demo_profile, demo_state, s3_bucket_block):
    s3 = s3_bucket_block.credentials.get_s3_client()
    for path in sorted(DEMO_CATALOG.iterdir())[:3]:
        s3.put_object(Bucket=s3_bucket_block.bucket_name, Key=f"products/{path.name}", Body=path.read_bytes())
    s3.put_object(Bucket=s3_bucket_block.bucket_name, Key="products/broken.jpg", Body=b"\xff\xd8\xff\xe0 not really")
    demo_profile.source = s3_bucket_block.model_copy(update={"bucket_folder": "products"})
    demo_profile.save("demo", overwrite=True)

    summary = catalog_refresh(client="demo", work_dir=str(demo_state / "work"))

    assert summary.counts == {"published": 3, "failed": 1}
    uris = {o.source_uri for o in summary.outcomes}
    assert f"s3://{s3_bucket_block.bucket_name}/products/broken.jpg" in uris
    failed = next(o for o in summary.outcomes if o.state == "failed")
    assert failed.reason.startswith("load: ")
    rows = Ledger(url=demo_profile.ledger.url).entries(client="demo", state="published")
    assert all(r.source_uri.startswith(f"s3://{s3_bucket_block.bucket_name}/products/") for r in rows)
