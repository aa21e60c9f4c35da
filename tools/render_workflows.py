"""Picture the shipped workflows with ComfyUI's own frontend, in headless Chromium.

    python tools/render_workflows.py --url http://127.0.0.1:8188 --upload-references  # write workflows/<name>.jpg
    python tools/render_workflows.py --url http://127.0.0.1:8188 --opened shots/      # + each template as it opens
    python tools/render_workflows.py --url http://127.0.0.1:8188 --only "Squeeze mini, subject from one reference" \
        --skip-thumbnails --after-run docs/                                            # the canvas after a run

`--url` is a running ComfyUI with this pack in custom_nodes, best a scratch one: `--upload-references` puts the
pictures the workflows load (subject.png, subject_side.png, subject_back.png: the miniature world's striped toy,
squeeze_core.mini.world) into its input folder, over any files of those names, so that the LoadImage nodes show them.
The only setting it stores there is Comfy.TutorialCompleted (so that no first-run dialog covers the canvas). Needs
`chromium` on PATH (Debian: apt-get install chromium) and aiohttp.

Thumbnails: each workflow's graph, loaded into the canvas, its heart (from the inputs to the sampler, without the
loaders and output nodes) fitted into a square clear of the menus and the minimap, node text drawn at any zoom,
captured and scaled to 512 x 512 px: `workflows/<name>.jpg`, which ComfyUI's template browser shows on the template's
card. `--opened DIR`: each template opened from the template browser the way an artist opens it, in a
1280 x 800 window with the frontend's default settings, screenshot to DIR/<name>.png, and a line saying whether every
node lies inside the free part of the window (tools/build_workflows.py frames them for it). `--after-run DIR`: each
template loaded into the canvas (its saved view), queued from the frontend as the Run button does, and the canvas
screenshot once the run has finished and its images show: DIR/<name> after a run.png (only a workflow whose files
the server has can run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
THUMBNAIL = 512
CAPTURE = 1024  # the square the graph is drawn into before scaling down
SQUARE_LEFT, SQUARE_TOP = 64, 100  # clear of the side bar, the tabs and the Run toolbar
SQUARE_WINDOW = (SQUARE_LEFT + CAPTURE + 320, SQUARE_TOP + CAPTURE + 120)  # the minimap and zoom controls lie outside it
# A thumbnail frames the heart of the graph, from the inputs to the sampler: the loaders and the output nodes, the same
# in every workflow, are left to its edges
FRAME_SKIP = {
    "UNETLoader", "LoraLoaderModelOnly", "ModelSamplingFlux", "VAELoader", "DualCLIPLoader", "SqueezeMLLMLoader", "VAEDecode", "SaveImage",
    "SqueezeMiniModels", "SqueezeComparisonSheet",
}


class Page:
    """One Chromium tab driven over the DevTools protocol."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="squeeze-chromium-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--remote-debugging-port={self.port}",
             f"--window-size={width},{height}", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.next_id = 0

    async def __aenter__(self):
        import aiohttp

        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                    target = next(t for t in json.load(response) if t["type"] == "page")
                break
            except (OSError, StopIteration):
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError("chromium did not start")
        self.session = aiohttp.ClientSession()
        self.socket = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    async def __aexit__(self, *exc):
        await self.socket.close()
        await self.session.close()
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def send(self, method: str, **params):
        self.next_id += 1
        await self.socket.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def js(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.js(expression):
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(expression)

    async def screenshot(self, clip: dict | None = None) -> Image.Image:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = (await self.send("Page.captureScreenshot", **params))["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    async def open_comfyui(self, url: str):
        await self.send("Page.navigate", url=url)
        await self.until("!!(window.app && window.app.graph && window.app.canvas && window.app.extensionManager)")
        await asyncio.sleep(1.5)  # extensions finish registering


async def upload_references(url: str) -> None:
    """The miniature world's toy (one identity, three scenes) as the pictures the workflows load."""
    import aiohttp

    from squeeze_core.mini import world

    toy = world.all_identities()[3]
    scenes = [s for s in world.all_scenes() if s.size == "large" and s.position == "center"][:3]
    async with aiohttp.ClientSession() as session:
        for seed, (name, scene) in enumerate(zip(("subject.png", "subject_side.png", "subject_back.png"), scenes)):
            png = io.BytesIO()
            world.render(toy, scene, seed=seed, size=256).save(png, format="PNG")
            form = aiohttp.FormData()
            form.add_field("image", png.getvalue(), filename=name, content_type="image/png")
            form.add_field("overwrite", "true")
            async with session.post(f"{url}/upload/image", data=form) as response:
                response.raise_for_status()


def store_setting(url: str, name: str, value) -> None:
    request = urllib.request.Request(f"{url}/settings/{name}", data=json.dumps(value).encode(), method="POST")
    urllib.request.urlopen(request, timeout=30).close()


NODE_RECTS = """JSON.stringify(app.graph._nodes.map(n => {
  const [x, y, w, h] = n.boundingRect, s = app.canvas.ds.scale, [ox, oy] = app.canvas.ds.offset;
  return {title: n.title, size: [n.size[0], n.size[1]], rect: [(x + ox) * s, (y + oy) * s, (x + w + ox) * s, (y + h + oy) * s]};
}))"""


async def thumbnails(url: str, names: list[str]) -> None:
    store_setting(url, "Comfy.TutorialCompleted", True)
    async with Page(*SQUARE_WINDOW) as page:
        await page.open_comfyui(url)
        await page.js("app.canvas.min_font_size_for_lod = 0, true")  # node text at any zoom, in this page only
        for name in names:
            graph = json.loads((WORKFLOWS / f"{name}.json").read_text())
            await page.js(f"app.loadGraphData({json.dumps(graph)}, true, false, {json.dumps(name)}).then(() => true)")
            await asyncio.sleep(1.0)
            await page.js(f"""(() => {{
              const skip = {json.dumps(sorted(FRAME_SKIP))};
              const nodes = app.graph._nodes.filter(n => !skip.includes(n.type)).map(n => n.boundingRect);
              const x0 = Math.min(...nodes.map(r => r[0])), y0 = Math.min(...nodes.map(r => r[1]));
              const x1 = Math.max(...nodes.map(r => r[0] + r[2])), y1 = Math.max(...nodes.map(r => r[1] + r[3]));
              const pad = 24, s = Math.min(({CAPTURE} - 2 * pad) / (x1 - x0), ({CAPTURE} - 2 * pad) / (y1 - y0));
              app.canvas.ds.scale = s;
              app.canvas.ds.offset = [({SQUARE_LEFT} + ({CAPTURE} - s * (x1 - x0)) / 2) / s - x0,
                                      ({SQUARE_TOP} + ({CAPTURE} - s * (y1 - y0)) / 2) / s - y0];
              app.canvas.setDirty(true, true); app.canvas.draw(true, true); return true;
            }})()""")
            await asyncio.sleep(1.0)  # DOM widgets (the prompt boxes) follow the canvas on the next frame
            shot = await page.screenshot({"x": SQUARE_LEFT, "y": SQUARE_TOP, "width": CAPTURE, "height": CAPTURE})
            shot.resize((THUMBNAIL, THUMBNAIL), Image.LANCZOS).save(WORKFLOWS / f"{name}.jpg", quality=88, optimize=True)
            print(f"wrote {WORKFLOWS / (name + '.jpg')}")


async def opened(url: str, names: list[str], folder: Path) -> bool:
    """Open each template from the template browser in a 1280 x 800 window, with default settings."""
    from build_workflows import MINIMAP_LEFT, MINIMAP_TOP, VIEW_BOTTOM, VIEW_HEIGHT, VIEW_LEFT, VIEW_RIGHT, VIEW_TOP, VIEW_WIDTH

    def inside(rect, slack=0.5):
        left, top, right, bottom = rect
        in_view = left >= VIEW_LEFT - slack and top >= VIEW_TOP - slack and right <= VIEW_RIGHT + slack and bottom <= VIEW_BOTTOM + slack
        return in_view and not (right > MINIMAP_LEFT and bottom > MINIMAP_TOP)

    store_setting(url, "Comfy.TutorialCompleted", True)
    folder.mkdir(parents=True, exist_ok=True)
    all_inside = True
    async with Page(VIEW_WIDTH, VIEW_HEIGHT) as page:
        await page.open_comfyui(url)
        for name in names:
            await page.js("app.extensionManager.command.execute('Comfy.BrowseTemplates').then(() => true)")
            await page.until(f"Array.from(document.querySelectorAll('h3')).some(h => h.textContent.trim() === {json.dumps(name)})")
            await asyncio.sleep(1.0)
            card_title = f"Array.from(document.querySelectorAll('h3')).find(h => h.textContent.trim() === {json.dumps(name)})"
            await page.js(f"{card_title}.click(), true")
            graph = json.loads((WORKFLOWS / f"{name}.json").read_text())
            await page.until(f"app.graph._nodes.length === {len(graph['nodes'])}")
            await asyncio.sleep(1.5)
            (await page.screenshot()).save(folder / f"{name}.png")
            rects = json.loads(await page.js(NODE_RECTS))
            outside = [r["title"] for r in rects if not inside(r["rect"])]
            grown = [r["title"] for r, saved in zip(rects, graph["nodes"]) if r["size"] != saved["size"]]
            scale = await page.js("app.canvas.ds.scale")
            print(f"{name}: zoom {scale:.3f}, {len(rects)} nodes, " + (f"outside the view: {outside}" if outside else "all inside the view")
                  + (f"; resized by the frontend: {grown}" if grown else ""))
            all_inside &= not outside and not grown
    return all_inside


FIT_ALL = """(() => {{
  const rects = app.graph._nodes.map(n => n.boundingRect);
  const x0 = Math.min(...rects.map(r => r[0])), y0 = Math.min(...rects.map(r => r[1]));
  const x1 = Math.max(...rects.map(r => r[0] + r[2])), y1 = Math.max(...rects.map(r => r[1] + r[3]));
  const [left, top, width, height] = [{left}, {top}, {width}, {height}];
  const s = Math.min(width / (x1 - x0), height / (y1 - y0));
  app.canvas.ds.scale = s;
  app.canvas.ds.offset = [(left + (width - s * (x1 - x0)) / 2) / s - x0, top / s - y0];
  app.canvas.setDirty(true, true); app.canvas.draw(true, true); return true;
}})()"""


async def after_run(url: str, names: list[str], folder: Path) -> None:
    """Load each template in a 1600 x 1000 window without the minimap, run it from the frontend, fit every node into
    the free part of the window and screenshot it."""
    store_setting(url, "Comfy.TutorialCompleted", True)
    store_setting(url, "Comfy.Minimap.Visible", False)
    folder.mkdir(parents=True, exist_ok=True)
    async with Page(1600, 1000) as page:
        await page.open_comfyui(url)
        for name in names:
            graph = json.loads((WORKFLOWS / f"{name}.json").read_text())
            await page.js(f"app.loadGraphData({json.dumps(graph)}, true, true, {json.dumps(name)}).then(() => true)")
            await asyncio.sleep(1.0)
            await page.js("app.queuePrompt(0, 1).then(() => true)")
            saves = "app.graph._nodes.filter(n => n.type === 'SaveImage')"
            await page.until(f"{saves}.every(n => n.imgs && n.imgs.length && n.imgs[0].complete)", timeout=300)
            await page.js(FIT_ALL.format(left=70, top=100, width=1510, height=880))
            await asyncio.sleep(2.0)  # DOM widgets follow the canvas on the next frame
            (await page.screenshot()).save(folder / f"{name} after a run.png")
            print(f"wrote {folder / (name + ' after a run.png')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a running ComfyUI with the pack, e.g. http://127.0.0.1:8188")
    parser.add_argument("--opened", type=Path, help="also open each template from the browser and screenshot it here")
    parser.add_argument("--skip-thumbnails", action="store_true")
    parser.add_argument("--only", action="append", help="this workflow only (its name); repeat for several")
    parser.add_argument("--after-run", type=Path, help="run each template from the canvas and screenshot it here")
    parser.add_argument("--upload-references", action="store_true", help="put the toy pictures into that ComfyUI's input folder")
    args = parser.parse_args()
    if args.upload_references:
        sys.path.insert(0, str(WORKFLOWS.parent))
        asyncio.run(upload_references(args.url.rstrip("/")))
    names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"--only {unknown[0]!r} is not a workflow in {WORKFLOWS} (those are: {', '.join(names)})")
    if not args.skip_thumbnails and not args.only:
        for stale in WORKFLOWS.glob("*.jpg"):
            if stale.stem not in names:
                stale.unlink()
    names = args.only or names
    if not args.skip_thumbnails:
        asyncio.run(thumbnails(args.url.rstrip("/"), names))
    if args.after_run:
        asyncio.run(after_run(args.url.rstrip("/"), names, args.after_run))
    if args.opened and not asyncio.run(opened(args.url.rstrip("/"), names, args.opened)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
