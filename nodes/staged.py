"""The staged sampler: SqueezeStagedSampler (a drop-in KSampler), SqueezeStagedGuider (for SamplerCustomAdvanced)
and SqueezeCosineScheduler (SIGMAS). Phase logic lives in squeeze_core.phases, shared with the headless pipeline."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..squeeze_core.errors import SqueezeInputError
from ..squeeze_core.phases import DEFAULT_TAU1, DEFAULT_TAU2, PhaseConditioning, PhaseThresholds, check_thresholds, cosine_times

logger = logging.getLogger("squeeze.sampler")

COSINE_SCHEDULER = "squeeze_cosine"
# the guider's conds are keyed by the node inputs that carry each denoising phase's positive
PHASE_INPUTS = {1: "positive", 2: "positive_middle", 3: "positive_late"}


def positive_by_phase(positive, positive_middle, positive_late, tau1, tau2) -> tuple[PhaseConditioning, PhaseThresholds | None]:
    """The staged sampler's three positive inputs as one triple, with the thresholds that switch between them; with
    neither later input connected, `positive` in every step and no thresholds (plain KSampler behaviour). One of the
    two alone is a mistake the artist must fix."""
    if (positive_middle is None) != (positive_late is None):
        missing = "positive_late" if positive_late is None else "positive_middle"
        raise SqueezeInputError(
            f"staged sampling needs both positive_middle and positive_late; {missing} is not connected. "
            "Connect both, or neither for plain KSampler behaviour."
        )
    if positive_middle is None:
        return PhaseConditioning.every_step(positive), None
    return PhaseConditioning(positive, positive_middle, positive_late), PhaseThresholds(tau1, tau2)


class StagedCFGGuider(comfy.samplers.CFGGuider):
    """CFGGuider whose positive conditioning is the one of the step's denoising phase, chosen by flow time t
    (= sigma for FLUX).

    Without thresholds it is exactly CFGGuider. `phase_log` records (sigma, phase) for every model call.
    """

    thresholds: PhaseThresholds | None = None

    def set_staged_conds(self, positive: PhaseConditioning, negative, thresholds: PhaseThresholds | None):
        """thresholds None: `positive.first` in every step, exactly as CFGGuider."""
        self.phase_log: list[tuple[float, int]] = []
        if thresholds is None:
            self.thresholds = None
            self.inner_set_conds({"positive": positive.first, "negative": negative})
            return
        self.thresholds = thresholds
        sampling = self.model_patcher.get_model_object("model_sampling")
        if not isinstance(sampling, comfy.model_sampling.CONST):
            raise SqueezeInputError(
                f"staged conditioning switches on flow time, but this model samples as {type(sampling).__name__}; "
                "use a flow-matching model such as FLUX."
            )
        self.inner_set_conds({"negative": negative} | {PHASE_INPUTS[phase]: positive.at(phase) for phase in (1, 2, 3)})

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        positive = self.conds.get("positive", None)
        if self.thresholds is not None:
            sigma = float(timestep.flatten()[0])
            phase = self.thresholds.phase(sigma)
            if not self.phase_log or self.phase_log[-1][1] != phase:
                logger.info("denoising phase %d from sigma %.4f", phase, sigma)
            self.phase_log.append((sigma, phase))
            positive = self.conds.get(PHASE_INPUTS[phase], None)
        return comfy.samplers.sampling_function(
            self.inner_model, x, timestep, self.conds.get("negative", None), positive, self.cfg, model_options=model_options, seed=seed
        )


def cosine_sigmas(model, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The cosine schedule through the model's own sigma mapping (so a ModelSamplingFlux shift applies)."""
    if denoise <= 0.0:
        return torch.FloatTensor([])
    total = steps if denoise >= 0.9999 else int(steps / denoise)
    sampling = model.get_model_object("model_sampling")
    sigmas = torch.tensor([float(sampling.percent_to_sigma(1.0 - float(t))) for t in cosine_times(total)], dtype=torch.float32)
    sigmas[-1] = 0.0
    return sigmas[-(steps + 1):]


def schedule_sigmas(model, steps, sampler_name, scheduler, denoise) -> torch.Tensor:
    if scheduler == COSINE_SCHEDULER:
        if sampler_name in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            # as KSampler does for these samplers: one step more, then drop the penultimate sigma
            sigmas = cosine_sigmas(model, steps + 1, denoise)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return cosine_sigmas(model, steps, denoise)
    # The same object KSampler builds, so every stock scheduler gives KSampler's exact sigmas.
    return comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name, scheduler=scheduler,
                                   denoise=denoise, model_options=model.model_options).sigmas


def staged_sample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0,
                  positive_middle=None, positive_late=None, tau1=DEFAULT_TAU1, tau2=DEFAULT_TAU2):
    """KSampler's sampling path (nodes.common_ksampler) with the staged guider in place of CFGGuider."""
    guider = StagedCFGGuider(model)
    staged, thresholds = positive_by_phase(positive, positive_middle, positive_late, tau1, tau2)
    guider.set_staged_conds(staged, negative, thresholds)
    guider.set_cfg(cfg)
    # Newer ComfyUI passes a latent's downscale ratios along (and only its latents carry them); 0.3.75 takes two args.
    ratios = [latent[k] for k in ("downscale_ratio_spacial", "downscale_ratio_temporal") if k in latent]
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"], *ratios)
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    sigmas = schedule_sigmas(model, steps, sampler_name, scheduler, denoise)
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    samples = guider.sample(noise, latent_image, comfy.samplers.sampler_object(sampler_name), sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    out = {k: v for k, v in latent.items() if k not in ("downscale_ratio_spacial", "downscale_ratio_temporal")}
    # as comfy.sample.sample: the intermediate device, and on releases that have one, the intermediate dtype
    intermediate_dtype = getattr(comfy.model_management, "intermediate_dtype", None)
    samples = samples.to(comfy.model_management.intermediate_device())
    out["samples"] = samples.to(intermediate_dtype()) if intermediate_dtype else samples
    return out, guider


def _staged_inputs():
    return [
        io.Conditioning.Input("positive_middle", optional=True,
                              tooltip="Denoising phase 2 (tau2 < t <= tau1): MLLM conditioning with references plus reference latents. "
                                      "Connect with positive_late, or leave both empty for plain KSampler behaviour."),
        io.Conditioning.Input("positive_late", optional=True,
                              tooltip="Denoising phase 3 (t <= tau2): prompt-only MLLM conditioning plus reference latents."),
        io.Float.Input("tau1", default=DEFAULT_TAU1, min=0.0, max=1.0, step=0.01,
                       tooltip="Flow time where denoising phase 2 starts (1 = pure noise). Must be greater than tau2."),
        io.Float.Input("tau2", default=DEFAULT_TAU2, min=0.0, max=1.0, step=0.01,
                       tooltip="Flow time where denoising phase 3 starts. Must be less than tau1."),
    ]


def _check(tau1, tau2):
    """Queue-time check: a bad pair is a node error before anything runs. Linked values arrive as None here."""
    if tau1 is None or tau2 is None:
        return True
    try:
        check_thresholds(tau1, tau2)
    except SqueezeInputError as error:
        return str(error)
    return True


class SqueezeStagedSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SqueezeStagedSampler",
            display_name="Squeeze Staged KSampler",
            category="Squeeze",
            description="A drop-in KSampler that switches the positive conditioning by timestep: MLLM first, "
                        "MLLM + reference latents in the middle, prompt-only MLLM + reference latents at the end. "
                        "With the staged inputs unconnected it is exactly KSampler.",
            inputs=[
                io.Model.Input("model", tooltip="The FLUX model (with the Squeeze LoRA)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True, tooltip="Noise seed."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps."),
                io.Float.Input("cfg", default=2.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance against negative, in every phase (the paper uses 2.5)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="Sampling algorithm."),
                io.Combo.Input("scheduler", options=[*comfy.samplers.KSampler.SCHEDULERS, COSINE_SCHEDULER],
                               tooltip=f"Noise schedule; {COSINE_SCHEDULER} is the paper's cosine schedule, "
                                       "t_i = cos(pi/2 * i/N), through the model's shift."),
                io.Conditioning.Input("positive",
                                      tooltip="Denoising phase 1 (t > tau1): MLLM conditioning with references, no reference latents. "
                                              "Used for every step when the staged inputs are empty."),
                io.Conditioning.Input("negative", tooltip="The negative conditioning, used in every phase."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Amount of denoising, as in KSampler."),
                *_staged_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="LATENT")],
        )

    @classmethod
    def validate_inputs(cls, tau1, tau2):
        return _check(tau1, tau2)

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                tau1, tau2, positive_middle=None, positive_late=None) -> io.NodeOutput:
        out, _ = staged_sample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                               positive_middle, positive_late, tau1, tau2)
        return io.NodeOutput(out)


class SqueezeStagedGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SqueezeStagedGuider",
            display_name="Squeeze Staged Guider",
            category="Squeeze",
            description="The staged conditioning switch as a GUIDER for SamplerCustomAdvanced.",
            inputs=[
                io.Model.Input("model", tooltip="The FLUX model (with the Squeeze LoRA)."),
                io.Conditioning.Input("positive", tooltip="Denoising phase 1 (t > tau1), or every step when the staged inputs are empty."),
                io.Conditioning.Input("negative", tooltip="The negative conditioning, used in every phase."),
                io.Float.Input("cfg", default=2.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale."),
                *_staged_inputs(),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def validate_inputs(cls, tau1, tau2):
        return _check(tau1, tau2)

    @classmethod
    def execute(cls, model, positive, negative, cfg, tau1, tau2, positive_middle=None, positive_late=None) -> io.NodeOutput:
        guider = StagedCFGGuider(model)
        staged, thresholds = positive_by_phase(positive, positive_middle, positive_late, tau1, tau2)
        guider.set_staged_conds(staged, negative, thresholds)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)


class SqueezeCosineScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SqueezeCosineScheduler",
            display_name="Squeeze Cosine Scheduler",
            category="Squeeze",
            description="The paper's cosine schedule, t_i = cos(pi/2 * i/N), mapped through the model's sigma shift.",
            inputs=[
                io.Model.Input("model", tooltip="The model whose sampling shift applies (e.g. after ModelSamplingFlux)."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Amount of denoising."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps, denoise) -> io.NodeOutput:
        return io.NodeOutput(cosine_sigmas(model, steps, denoise))
