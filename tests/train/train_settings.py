"""The tiny training settings every training test starts from (CPU, float32, seconds per run)."""

TINY = dict(
    resolution=64, bucket_step=16, reference_long_side=64, lora_rank=4, dla_attn_dim=32, dla_num_heads=4,
    base_dtype="float32", mixed_precision="no", gradient_checkpointing=False, num_workers=0, learning_rate=1e-3,
    max_steps=4, checkpoint_every=2,
)
