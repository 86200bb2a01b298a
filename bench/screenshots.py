"""Screenshots of what a person sees in the Prefect UI, from a real server, in headless Chromium.

    python bench/screenshots.py [--out .brandforge/screens]      # needs Debian's `chromium` (apt-get install chromium)

Starts `make serve` (python -m brandforge.deployments.serve: a Prefect server, the
deployments, the webhook gateway that serves the signed previews) on free
127.0.0.1 ports with a temporary PREFECT_HOME and state folder, runs the
nightly demo deployment, the same deployment for a client whose gates quarantine
everything (two assets), then one asset for a client whose gates make it
borderline, so it pauses for review. Chromium (driven over the DevTools
protocol: the review form is a modal behind the "Resume" button) takes:

- flow-run.png          the catalog run's page
- artifacts.png         the catalog run's Artifacts tab
- gate-report.png       the gate report artifact: thumbnails with scores
- gate-report-quarantine.png  the gate report of a run whose gates quarantine everything: the quarantine list
- asset-table.png       the catalog's asset table artifact
- asset-table-previews.png  the same rows with the `preview` cell (`tasks.previews.asset_preview`), as a
                        table artifact left by this script: what the catalog table shows once it has that column
- review-form.png       the paused asset's review form: source beside variant, the scores, the form
- data-uri-probe.png    whether the UI's markdown shows an inline data: image (the fallback for files no
                        preview link reaches)

Not part of `make test`: it needs a browser and takes a few minutes.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    sys.exit("no Chromium: apt-get install chromium")


class Page:
    """A headless Chromium tab driven over the DevTools protocol (websockets, installed with Prefect)."""

    def __init__(self, workdir: Path, width: int = 1440, height: int = 1800):
        from websockets.sync.client import connect

        port = free_port()
        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--remote-debugging-port={port}",
             f"--user-data-dir={workdir / 'chromium'}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                tabs = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                ws = next(t["webSocketDebuggerUrl"] for t in tabs if t.get("type") == "page")
                break
            except (httpx.HTTPError, StopIteration, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        self.ws = connect(ws, max_size=64 * 2**20)
        self.ids = itertools.count(1)
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str, until_text: str | None = None, settle_s: float = 3.0, limit_s: float = 90) -> None:
        self.call("Page.navigate", url=url)
        self.goto_wait(until_text, settle_s, limit_s)

    def goto_wait(self, until_text: str | None = None, settle_s: float = 3.0, limit_s: float = 90) -> None:
        url = self.js("location.href")
        deadline = time.monotonic() + limit_s
        while until_text and not self.js(f"document.body && document.body.innerText.includes({json.dumps(until_text)})"):
            if time.monotonic() > deadline:
                print(f"  (did not see {until_text!r} on {url})")
                break
            time.sleep(0.5)
        self.wait_for_images()
        time.sleep(settle_s)

    def wait_for_images(self, limit_s: float = 30) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and not self.js("Array.from(document.images).every(i => i.complete)"):
            time.sleep(0.3)

    def click(self, text: str) -> bool:
        """Click the button, tab or link whose text is exactly `text`."""
        return bool(self.js(
            "(() => { const b = Array.from(document.querySelectorAll('button, [role=tab], a, li'))"
            f".find(b => b.innerText && b.innerText.trim() === {json.dumps(text)}); if (b) b.click(); return !!b; }})()"))

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        broken = self.js("Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).map(i => i.src.slice(0, 80))")
        shown = self.js("Array.from(document.images).filter(i => i.naturalWidth > 0 && i.src.includes('/preview?')).length")
        inline = self.js("Array.from(document.images).filter(i => i.src.startsWith('data:')).map(i => i.naturalWidth)")
        print(f"  {path}  ({shown} preview image(s) loaded; data: images {inline or 'none'}; broken: {broken or 'none'})")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_serve(tmp: Path) -> tuple[subprocess.Popen, str, str]:
    """`make serve` on free ports; returns (process, UI address, gateway address) once it says it is up."""
    port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "BRANDFORGE_PUBLIC_URL")}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.Popen([sys.executable, "-m", "brandforge.deployments.serve", "--port", str(port),
                             "--gateway-port", str(gateway_port), "--state-dir", str(tmp / "state")],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] and lines.put(None), daemon=True).start()
    while True:
        line = lines.get(timeout=600)
        if line is None:
            sys.exit("serve ended before it was up")
        print("  serve:", line.rstrip())
        if "Ctrl-C stops everything" in line:
            break
    threading.Thread(target=lambda: [None for _ in iter(lines.get, None)], daemon=True).start()  # keep draining
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{gateway_port}"


def review_profile(state: Path, sharpness: float):
    """The demo client with a sharpness gate just above what the engine makes: every variant is borderline."""
    from brandforge.blocks.ledger import Ledger
    from brandforge.deployments.demo import DEMO, demo_profile
    from brandforge.models import GateThresholds

    profile = demo_profile(state, client_id="review-demo", catalog=DEMO / "catalog")
    gates = GateThresholds(min_width=256, min_height=256, min_sharpness=round(sharpness + 5, 1),
                           review_band={"sharpness": 25.0}, review_timeout_s=3600)
    return profile.model_copy(update={"gates": gates, "display_name": "Review demo",
                                      "ledger": Ledger(url=f"sqlite:///{state / 'review-ledger.db'}")})


def strict_profile(state: Path):
    """The demo client with a sharpness gate no image passes and no review band: everything is quarantined."""
    from brandforge.blocks.ledger import Ledger
    from brandforge.deployments.demo import DEMO, demo_profile
    from brandforge.models import GateThresholds

    profile = demo_profile(state, client_id="strict-demo", catalog=DEMO / "catalog")
    return profile.model_copy(update={"gates": GateThresholds(min_width=256, min_height=256, min_sharpness=100000.0),
                                      "display_name": "Strict demo",
                                      "ledger": Ledger(url=f"sqlite:///{state / 'strict-ledger.db'}")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".brandforge/screens", help="folder for the PNGs")
    parser.add_argument("--asset", default="coffee-cup.jpg", help="the demo image sent for review")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bf-screens-"))
    started = time.monotonic()
    proc, ui, gateway = start_serve(tmp)
    page = None
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: f"{ui}/api"}):
            print(f"serve up after {time.monotonic() - started:.0f} s; running the nightly demo …")
            run = run_deployment("catalog-refresh/nightly-demo", timeout=900)
            print(f"  catalog run {run.id}: {run.state.type.value} {run.state.message or ''}")
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            by_key = {a.key: a for a in artifacts if a.key}
            report = next(a for k, a in by_key.items() if k.endswith("gate-report"))
            table = next(a for k, a in by_key.items() if k.endswith("catalog-assets"))
            scores = json.loads(next(a for k, a in by_key.items() if k.endswith("gate-scores")).data)
            row = next(r for r in scores if r["asset"] == args.asset and r["chosen"] == "yes")

            # The catalog table with its preview cell, signed here with serve's state folder and gateway.
            from prefect.artifacts import create_table_artifact

            from brandforge.models import AssetOutcome
            from brandforge.tasks.previews import asset_preview

            os.environ.update(BRANDFORGE_STATE_DIR=str(tmp / "state"), BRANDFORGE_PUBLIC_URL=gateway)
            rows = json.loads(table.data)
            for r in rows:
                local = r["output"].startswith(("file://", "/"))
                o = AssetOutcome(client="demo", source_uri="", name=r["asset"], state=r["state"],
                                 published_url=r["output"] if r["output"].startswith("file://") else None,
                                 output_uris=[r["output"]] if local else [])
                r["preview"] = asset_preview(o)
            preview_table = create_table_artifact([{"asset": r["asset"], "preview": r["preview"], "state": r["state"],
                                                    "scores": r["scores"]} for r in rows],
                                                  key="demo-catalog-assets-with-previews",
                                                  description="demo: the asset table with its preview column")

            strict_profile(tmp / "state").save("strict-demo", overwrite=True)
            strict = run_deployment("catalog-refresh/nightly-demo", timeout=900, parameters={"client": "strict-demo", "limit": 2})
            print(f"  strict catalog run {strict.id}: {strict.state.type.value} {strict.state.message or ''}")
            with get_client(sync_client=True) as client:
                strict_report = next(a for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[strict.id])))
                    if a.key and a.key.endswith("gate-report"))

            # Does the UI's markdown show data: URIs (the fallback for files no preview link reaches, the histogram)?
            from prefect.artifacts import create_markdown_artifact

            from brandforge.tasks.previews import data_uri

            probe_png = tmp / "probe.png"
            from PIL import Image

            Image.new("RGB", (160, 90), (200, 40, 40)).save(probe_png)
            probe = create_markdown_artifact(f"# data: URI probe\n\n![red 160x90]({data_uri(probe_png, 160)})\n\nabove: a red box?",
                                             key="data-uri-probe")

            from brandforge.deployments.demo import DEMO
            from brandforge.tasks.load import source_uri
            from prefect.filesystems import LocalFileSystem

            review_profile(tmp / "state", row["sharpness"]).save("review-demo", overwrite=True)
            uri = source_uri(LocalFileSystem(basepath=str(DEMO / "catalog")), args.asset)
            paused = run_deployment("process-asset/on-new-asset", timeout=0,
                                    parameters={"asset": {"client": "review-demo", "uri": uri, "name": args.asset}})
            deadline = time.monotonic() + 600
            with get_client(sync_client=True) as client:
                while not client.read_flow_run(paused.id).state.is_paused():
                    state = client.read_flow_run(paused.id).state
                    if state.is_final() or time.monotonic() > deadline:
                        sys.exit(f"the review run did not pause: {state.type.value} {state.message}")
                    time.sleep(1)
            print(f"  review run {paused.id} is paused for a person")

        page = Page(tmp)
        print("screenshots:")
        page.goto(f"{ui}/runs/flow-run/{run.id}", until_text="catalog-refresh", settle_s=6)
        page.screenshot(out / "flow-run.png")
        page.click("Artifacts")
        page.goto_wait("gate report", settle_s=4)
        page.screenshot(out / "artifacts.png")
        page.goto(f"{ui}/artifacts/artifact/{report.id}", until_text="Gate report", settle_s=4)
        page.screenshot(out / "gate-report.png")
        page.goto(f"{ui}/artifacts/artifact/{strict_report.id}", until_text="Quarantined", settle_s=4)
        page.screenshot(out / "gate-report-quarantine.png")
        page.goto(f"{ui}/artifacts/artifact/{probe}", until_text="probe", settle_s=3)
        page.screenshot(out / "data-uri-probe.png")
        page.goto(f"{ui}/artifacts/artifact/{table.id}", until_text=args.asset, settle_s=4)
        page.screenshot(out / "asset-table.png")
        page.goto(f"{ui}/artifacts/artifact/{preview_table}", until_text=args.asset, settle_s=4)
        page.screenshot(out / "asset-table-previews.png")
        page.goto(f"{ui}/runs/flow-run/{paused.id}", until_text="Resume", settle_s=3)
        if not page.click("Resume"):
            print("  (no Resume button on the paused run's page)")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not page.js("document.body.innerText.includes('Approve to publish')"):
            time.sleep(0.5)
        page.wait_for_images()
        time.sleep(3)
        page.screenshot(out / "review-form.png")
        print(f"done in {time.monotonic() - started:.0f} s (gateway {gateway})")
    finally:
        if page is not None:
            page.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
