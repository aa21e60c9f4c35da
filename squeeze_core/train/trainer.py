"""The training loop: two-stage LoRA + DLA training through accelerate (one process, DDP or FSDP).

    squeeze train --config stage1.yaml                       # one process
    accelerate launch --num_processes 8 -m squeeze_core.cli train --config stage1.yaml    # DDP on 8 GPUs

Each step takes `gradient_accumulation_steps` batches per process. A batch's MLLM and VAE encodings run batched and
without gradients (both are frozen); then samples with the same target size and reference-latent shapes share one
DLA + FLUX forward and backward (prompts of different lengths padded and masked), gradients summing over the step
and synchronising across processes once, on the last group. Per step, metrics.jsonl gets one line (loss averaged
over every sample of every process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import SqueezeError
from ..files import atomic_copy
from ..flux import latent_shape, vae_downscale
from ..lora import save_comfyui_lora
from ..references import resize_reference
from ..sampling import to_model_space
from ..vae import vae_encode
from ..weights import save_dla
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import BucketBatches, PairDataset, SkipCounter, assign_buckets, epoch_loader, make_buckets, read_manifest
from .models import CONFIG_FILE, DLA_FILE, LORA_FILE, TrainingModels, load_training_models
from .step import SqueezeTrainable, draw_condition_use, group_samples, noisy_latent, sample_timesteps, velocity_loss

logger = logging.getLogger("squeeze.train")
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)  # this run's steps only
    skipped: int = 0
    condition_counts: dict[str, int] = field(default_factory=dict)
    main_process: bool = True  # False on the other processes of a distributed run (they print nothing)
    already_complete: bool = False  # output_dir held a finished run: nothing was trained


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    kwargs = {"mixed_precision": config.mixed_precision, "cpu": not torch.cuda.is_available()}
    if config.distributed == "fsdp":
        if not torch.cuda.is_available():
            raise SqueezeError("distributed=fsdp needs GPUs (accelerate's FSDP does not run on the CPU); use distributed=ddp.")
        from accelerate.utils import FullyShardedDataParallelPlugin

        # one FSDP unit per FLUX block; use_orig_params because frozen and LoRA weights share those units
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            use_orig_params=True, sync_module_states=True, auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["FluxTransformerBlock", "FluxSingleTransformerBlock"],
        )
    else:
        # a sample without reference images has no image tokens, so the DLA's image LAP gets no gradient from it
        kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    return Accelerator(**kwargs)


def group_learning_rates(config: TrainConfig) -> dict[str, float]:
    """The optimiser's parameter groups, by name, with their full learning rates."""
    return {"dla": config.dla_learning_rate or config.learning_rate, "lora": config.learning_rate}


def build_optimizer(config: TrainConfig, models: TrainingModels) -> torch.optim.Optimizer:
    rates = group_learning_rates(config)
    parameters = {"dla": list(models.dla.parameters()), "lora": [p for p in models.transformer.parameters() if p.requires_grad]}
    groups = [{"name": name, "params": parameters[name], "lr": rate} for name, rate in rates.items()]
    # the fused kernel (one launch for all tensors) where every trained tensor is on a GPU; the default loop elsewhere
    fused = all(p.is_cuda for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, fused=fused or None)


def build_scheduler(config: TrainConfig, optimizer, step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' constant schedule with linear warm-up (`learning_rate_factor`) on each group's rate from the config,
    positioned at `step`: a resumed run continues its schedule with the config's rates, not the ones its checkpoint's
    optimiser state carries. diffusers counts the first step as warm-up step 0 (rate 0); here it is step 1 of
    `warmup_steps`, so no step trains at rate 0: the schedule is read one step ahead."""
    from diffusers.optimization import get_constant_schedule, get_constant_schedule_with_warmup

    rates = group_learning_rates(config)
    for group in optimizer.param_groups:
        group["initial_lr"] = rates[group["name"]]
    if not config.warmup_steps:
        return get_constant_schedule(optimizer, last_epoch=step - 1)
    return get_constant_schedule_with_warmup(optimizer, config.warmup_steps, last_epoch=step)


def attention_for_training():
    """scaled_dot_product_attention without its cuDNN backend. On an H100 (torch 2.11, CUDA 13) cuDNN's attention
    backward failed in a FLUX.1-dev-size stage-2 step ("mha_graph.execute ... is_good()", then an illegal memory
    access); flash and memory-efficient attention train the same step (benchmarks/real_size.py, docs/benchmarks.md)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def learning_rate_factor(config: TrainConfig, step: int) -> float:
    """The factor on the learning rate of the step after `step` finished ones, as build_scheduler's schedule sets it:
    linear warm-up over `warmup_steps`, then constant (the paper trains at a constant rate)."""
    return min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.accelerator = make_accelerator(config)
        self.output_dir = Path(config.output_dir)
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + self.accelerator.process_index)
        self.skips = SkipCounter()
        self.condition_counts: dict[str, int] = {}
        self.models: TrainingModels | None = None  # set by setup() or attach_models()

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    # ------------------------------------------------------------------------------------------------------ set-up
    def _data(self):
        config = self.config
        manifest = config.manifest
        if manifest is None:
            from ..embedded import EmbeddedModels

            manifest = EmbeddedModels.packaged().pairs  # pairs of the embedded benchmark's references
        buckets = make_buckets(config.resolution, config.bucket_step, config.max_aspect)
        samples, bucket_of = assign_buckets(read_manifest(manifest, config.max_references), buckets, self.skips)
        if not samples:
            raise SqueezeError(f"no usable sample in '{manifest}': every target image was missing or unreadable.")
        batches = BucketBatches(bucket_of, config.batch_size, config.seed, self.accelerator.process_index, self.accelerator.num_processes)
        return PairDataset(samples, bucket_of, buckets), batches

    def _resume_point(self) -> Path | None:
        config = self.config
        if config.resume == "never":
            return None
        if config.resume != "auto":
            path = Path(config.resume)
            if not (path / ckpt.STATE_FILE).is_file():
                raise SqueezeError(f"resume='{path}' is not a complete checkpoint directory (no {ckpt.STATE_FILE}).")
            return path
        found = ckpt.list_checkpoints(self.output_dir)
        return found[-1] if found else None

    # --------------------------------------------------------------------------------------------------- one batch
    @torch.no_grad()
    def prepare_batch(self, batch: dict) -> list[dict]:
        """Encode a batch (frozen MLLM and VAE) and draw its conditions, times and noise -> one dict per sample."""
        config, models, device = self.config, self.models, self.accelerator.device
        count = len(batch["prompt"])
        uses = [draw_condition_use(self.generator, config.training_stage, config.mllm_reference_drop, config.vae_reference_drop,
                                   config.prompt_drop) for _ in range(count)]
        height, width = batch["target"].shape[1:3]
        t = sample_timesteps(self.generator, count, width, height, config.timestep_sampling, config.logit_mean,
                             config.logit_std, config.resolution_shift)
        noise = torch.randn(latent_shape(width, height, count, vae_downscale(models.vae)), generator=self.generator)
        clean = to_model_space(vae_encode(models.vae, batch["target"]))  # (B, 16, H/d, W/d), d = vae_downscale
        prompts = [prompt if use.prompt else "" for prompt, use in zip(batch["prompt"], uses)]
        mllm_refs = [refs if use.mllm_references else [] for refs, use in zip(batch["references"], uses)]
        hidden = models.encoder.encode(prompts, mllm_refs)
        reference_latents = self._encode_references([refs if use.vae_references else [] for refs, use in zip(batch["references"], uses)])
        samples = []
        for i, use in enumerate(uses):
            length = int(hidden.attention_mask[i].sum())
            latents = reference_latents[i]
            noisy, velocity = noisy_latent(clean[i : i + 1], noise[i : i + 1].to(device), t[i : i + 1].to(device))
            samples.append(dict(
                hidden_states=hidden.hidden_states[:, i : i + 1, :length], attention_mask=hidden.attention_mask[i : i + 1, :length],
                token_types=hidden.token_types[i : i + 1, :length], noisy=noisy, t=t[i : i + 1].to(device),
                references=latents, velocity=velocity, use=use,
            ))
            self.condition_counts[use.name] = self.condition_counts.get(use.name, 0) + 1
        return samples

    def _encode_references(self, references: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        """Per sample, its references' latents in model space: one VAE call per reference size, not per image."""
        resized = [[resize_reference(r[None], self.config.reference_long_side) for r in refs] for refs in references]
        by_size: dict[tuple, list[tuple[int, int]]] = {}
        for i, refs in enumerate(resized):
            for j, pixels in enumerate(refs):
                by_size.setdefault(tuple(pixels.shape), []).append((i, j))
        latents = [[None] * len(refs) for refs in resized]
        for places in by_size.values():
            encoded = to_model_space(vae_encode(self.models.vae, torch.cat([resized[i][j] for i, j in places])))
            for (i, j), latent in zip(places, encoded.split(1)):
                latents[i][j] = latent  # (1, 16, h, w)
        return latents

    def _batches(self, epoch: int, position: int):
        """Batches from (epoch, position) on, forever: yields (epoch, position after it, batch)."""
        empty_in_a_row = 0
        while True:
            order = self.batches.epoch(epoch)
            for offset, batch in enumerate(epoch_loader(self.dataset, order[position:], self.config.num_workers)):
                empty_in_a_row = 0 if batch["prompt"] else empty_in_a_row + 1
                if empty_in_a_row > len(order):
                    raise SqueezeError(
                        f"a whole epoch of batches had no usable sample ({self.skips.total} images skipped: "
                        f"{self.skips.counts}); check the image paths in the manifest."
                    )
                yield epoch, position + offset + 1, batch
            epoch, position = epoch + 1, 0

    def train_step(self, samples: list[dict], batched: bool = True) -> float:
        """Forward and backward every sample, one optimiser step; returns this process's mean loss.

        Samples that can share a FLUX forward go through it together (group_samples); batched=False runs them one
        by one, which gives the same gradients (tested)."""
        accelerator, model = self.accelerator, self.model
        groups = group_samples(samples) if batched else [group_samples([s])[0] for s in samples]
        count = sum(group["count"] for group in groups)
        total = 0.0
        for index, group in enumerate(groups):
            last = index == len(groups) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model), attention_for_training():
                with accelerator.autocast():
                    prediction = model(group["hidden_states"], group["attention_mask"], group["token_types"],
                                       group["noisy"], group["t"], group["references"], self.config.guidance)
                    loss = velocity_loss(prediction, group["velocity"])  # the group's mean of per-sample losses
                accelerator.backward(loss * group["count"] / count)  # inside: checkpointed blocks recompute here
            total += float(loss.detach()) * group["count"]
        if self.config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / count

    # ----------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, data_state: dict) -> Path:
        """Assembled in a hidden temporary folder, renamed into place when whole; an interruption (Ctrl-C, an error)
        removes the temporary folder, so no half checkpoint is ever left."""
        temporary = ckpt.temporary_dir(self.output_dir, step)
        try:
            return self._save_checkpoint(step, data_state, temporary)
        except BaseException:
            if self.main:
                ckpt.remove_leftovers(self.output_dir)
            raise

    def _save_checkpoint(self, step: int, data_state: dict, temporary: Path) -> Path:
        accelerator, config = self.accelerator, self.config
        final = ckpt.checkpoint_dir(self.output_dir, step)
        if self.main:
            temporary.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        ckpt.save_rank_state(temporary / f"rank-{accelerator.process_index}.safetensors", self.generator,
                             {**data_state, "skips": self.skips.counts, "conditions": self.condition_counts,
                              # equal on every process exactly when gradients were synchronised (data differs per process)
                              "trainable_checksum": float(sum(p.detach().double().abs().sum() for p in self.trainable))})
        dla, transformer = self._unwrapped()
        accelerator.wait_for_everyone()
        with self._full_parameters(writeback=False):  # FSDP: gather the shards (a collective: every process enters)
            if self.main:
                self._write_weights(temporary, dla, transformer, step)
        if self.main:
            if self._sharded:
                logger.warning("FSDP: optimiser moments are sharded and not saved; a resumed run restarts them")
            else:
                ckpt.save_optimizer(self.optimizer, temporary / ckpt.OPTIMIZER_FILE)
            state = {"step": step, "training_stage": config.training_stage, "num_processes": accelerator.num_processes}
            (temporary / ckpt.STATE_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")
            ckpt.publish(temporary, final, config.keep_checkpoints)
        accelerator.wait_for_everyone()
        return final

    @property
    def _sharded(self) -> bool:
        return self.config.distributed == "fsdp" and self.accelerator.num_processes > 1

    def _full_parameters(self, writeback: bool):
        """Under FSDP, the unwrapped modules hold whole parameters inside this context; otherwise a no-op."""
        if not self._sharded:
            return contextlib.nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(self.model, writeback=writeback)

    def _unwrapped(self):
        model = self.accelerator.unwrap_model(self.model)
        return model.dla, model.transformer

    def _write_weights(self, folder: Path, dla, transformer, step: int) -> None:
        info = {"squeeze.training_stage": str(self.config.training_stage), "squeeze.step": str(step)}
        save_dla(dla, folder / DLA_FILE, mllm=self.models.encoder.info)
        save_comfyui_lora(transformer, folder / LORA_FILE, metadata=info)
        self.config.save(folder / CONFIG_FILE)

    def load_checkpoint(self, path: Path) -> tuple[int, dict]:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        from ..weights import load_dla

        state = ckpt.read_trainer_state(path)
        if state["num_processes"] != self.accelerator.num_processes:
            raise SqueezeError(
                f"checkpoint '{path}' was written by {state['num_processes']} process(es); resume it with the same "
                f"number (this run has {self.accelerator.num_processes}), or set resume=never to start over."
            )
        if state.get("training_stage") != self.config.training_stage:
            raise SqueezeError(
                f"checkpoint '{path}' is from training stage {state.get('training_stage')} but this run is training stage "
                f"{self.config.training_stage}; "
                "give each training stage its own output_dir (training stage 2 starts from stage 1 through init_from)."
            )
        dla, transformer = self._unwrapped()
        lora = {k[len("transformer."):]: v for k, v in load_file(str(path / LORA_FILE)).items() if not k.endswith(".alpha")}
        with self._full_parameters(writeback=True):
            dla.load_state_dict(load_dla(path / DLA_FILE, mllm=self.models.encoder.info).state_dict())
            result = set_peft_model_state_dict(transformer, lora, adapter_name="default")
        if getattr(result, "unexpected_keys", None):
            raise SqueezeError(f"checkpoint '{path}' LoRA does not fit this FLUX: {result.unexpected_keys[:5]}")
        if (path / ckpt.OPTIMIZER_FILE).is_file() and not self._sharded:
            ckpt.load_optimizer(self.optimizer, path / ckpt.OPTIMIZER_FILE)
        data_state = ckpt.load_rank_state(path / f"rank-{self.accelerator.process_index}.safetensors", self.generator)
        self.skips.counts = dict(data_state.pop("skips", {}))
        self.condition_counts = dict(data_state.pop("conditions", {}))
        return int(state["step"]), data_state

    # ------------------------------------------------------------------------------------------------------- run
    def setup(self) -> None:
        """Data, models, optimiser, accelerate; everything but the loop (the tests drive steps from here)."""
        config, accelerator = self.config, self.accelerator
        check_before_writing(config)  # nothing is written until every path in the config is what it should be
        self.dataset, self.batches = self._data()  # reads and checks the manifest before anything is written
        if self.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_leftovers(self.output_dir)
            config.save(self.output_dir / CONFIG_FILE)
        accelerator.wait_for_everyone()
        self.attach_models(load_training_models(config, accelerator.device))

    def attach_models(self, models: TrainingModels) -> None:
        """The optimiser and accelerate's wrapping around models that are ready to train (setup's last step; the
        real-size benchmark calls it with models built in memory)."""
        accelerator = self.accelerator
        self.models = models
        self.optimizer = build_optimizer(self.config, self.models)
        self.model, self.optimizer = accelerator.prepare(SqueezeTrainable(self.models.dla, self.models.transformer), self.optimizer)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    def finished_step(self) -> int | None:
        """The step of a run in output_dir that already reached total_steps (resume=auto), else None."""
        if self.config.resume != "auto":
            return None
        found = ckpt.list_checkpoints(self.output_dir)
        if not found:
            return None
        state = ckpt.read_trainer_state(found[-1])
        if state.get("training_stage") != self.config.training_stage:  # another training stage's run: the normal path explains the mistake
            return None
        step = int(state["step"])
        return step if step >= self.config.total_steps and (self.output_dir / DLA_FILE).is_file() else None

    def run(self) -> TrainResult:
        done = self.finished_step()
        if done is not None:  # nothing to train: say so without loading a model
            logger.warning("the run in %s is already complete at step %d of %d; raise max_steps or give another output_dir "
                           "to train more", self.output_dir, done, self.config.total_steps)
            return TrainResult(self.output_dir, done, already_complete=True, main_process=self.main)
        if self.models is None:
            self.setup()
        config, accelerator = self.config, self.accelerator
        step, data_state = 0, {"epoch": 0, "position": 0}
        resume = self._resume_point()
        if resume is not None:
            step, data_state = self.load_checkpoint(resume)
            logger.info("resumed from %s at step %d", resume, step)
        scheduler = build_scheduler(config, self.optimizer, step)
        metrics = self.output_dir / METRICS_FILE
        if self.main:
            self._truncate_metrics(metrics, step)
        result = TrainResult(self.output_dir, step)
        total = config.total_steps
        stream = self._batches(data_state["epoch"], data_state["position"])
        progress = tqdm(total=total, initial=step, desc=f"training stage {config.training_stage}", disable=not self.main)
        while step < total:
            started = time.perf_counter()
            samples = []
            for _ in range(config.gradient_accumulation_steps):
                while True:
                    epoch, position, batch = next(stream)
                    for path, reason in batch["skipped"]:
                        self.skips.add(path, reason)
                    if batch["prompt"]:
                        break
                samples += self.prepare_batch(batch)
            learning_rate = scheduler.get_last_lr()[-1]  # the LoRA's, this step's
            loss = self.train_step(samples)
            scheduler.step()
            step += 1
            mean_loss = float(accelerator.reduce(torch.tensor([loss], device=accelerator.device), reduction="mean")[0])
            skipped = int(accelerator.reduce(torch.tensor([self.skips.total], device=accelerator.device), reduction="sum")[0])
            if not math.isfinite(mean_loss):
                raise SqueezeError(f"the loss is {mean_loss} at step {step}; lower learning_rate or check the data.")
            result.losses.append(mean_loss)
            if self.main:
                line = {"step": step, "loss": mean_loss, "lr": learning_rate, "epoch": epoch,
                        "skipped": skipped, "seconds": round(time.perf_counter() - started, 4)}
                with metrics.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line) + "\n")
                progress.update(1)
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                if step % config.log_every == 0:
                    logger.info("step %d/%d loss %.5f skipped %d", step, total, mean_loss, skipped)
            if step % config.checkpoint_every == 0 or step == total:
                self.save_checkpoint(step, {"epoch": epoch, "position": position})
        progress.close()
        if self.main:
            self.export(ckpt.checkpoint_dir(self.output_dir, step))  # every run ends with a checkpoint at its last step
        accelerator.wait_for_everyone()
        result.steps, result.skipped, result.condition_counts = step, self.skips.total, dict(self.condition_counts)
        result.main_process = self.main
        return result

    def export(self, checkpoint: Path) -> None:
        """The final checkpoint's DLA, LoRA and config beside the checkpoints, under the names the ComfyUI nodes and
        `squeeze generate` use (copied atomically: the checkpoint already holds them in their final format)."""
        for name in (DLA_FILE, LORA_FILE, CONFIG_FILE):
            atomic_copy(checkpoint / name, self.output_dir / name)
        logger.info("exported %s and %s from %s to %s", DLA_FILE, LORA_FILE, checkpoint.name, self.output_dir)

    @staticmethod
    def _truncate_metrics(metrics: Path, step: int) -> None:
        """A resumed run rewrites the steps after its checkpoint: drop the lines a killed run wrote past it."""
        if not metrics.is_file():
            return
        kept = [line for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= step]
        metrics.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def check_before_writing(config: TrainConfig) -> None:
    """Every path of the config that can be checked without loading a model: output_dir can be created (a directory,
    writable), the model folders and the manifest exist, init_from holds stage-1 weights, resume is a checkpoint."""
    from .. import checks
    from ..mllm import check_mllm_dir
    from .models import DLA_FILE, LORA_FILE

    checks.output_dir(config.output_dir, "training config: output_dir")
    if config.mllm is not None:
        check_mllm_dir(config.mllm)
    for name in ("transformer", "vae"):
        if getattr(config, name) is not None:
            checks.existing(getattr(config, name), f"training config: {name}", "a FLUX.1-dev folder (diffusers layout)", directory=True)
    if config.manifest is not None:
        checks.existing(config.manifest, "training config: manifest", "a JSONL manifest file")
    if config.init_from is not None:
        init = checks.existing(config.init_from, "training config: init_from", "a stage-1 output or checkpoint directory", directory=True)
        missing = [name for name in (DLA_FILE, LORA_FILE) if not (init / name).is_file()]
        if missing:
            raise SqueezeError(f"training config: init_from '{init}' has no {', '.join(missing)}; point it at a stage-1 output "
                               "or checkpoint directory.")
    if config.resume not in ("auto", "never") and not (Path(config.resume) / ckpt.STATE_FILE).is_file():
        raise SqueezeError(f"training config: resume='{config.resume}' is not a complete checkpoint directory "
                           f"(no {ckpt.STATE_FILE}); use auto, never or a checkpoint-* folder.")


def train(config: TrainConfig) -> TrainResult:
    return Trainer(config).run()
