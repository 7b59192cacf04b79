"""SAM2 (Segment Anything 2) in Flax Linen: image model, in-graph video propagation, HF conversion."""

from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.convert import load_checkpoint, load_hf, save_checkpoint
from omnir1_jax.models.sam2.model import Sam2Model, Sam2VideoModel
from omnir1_jax.models.sam2.streaming import propagate_chunked
from omnir1_jax.models.sam2.video import encode_frames, propagate, propagate_groups

__all__ = ["Sam2Config", "Sam2Model", "Sam2VideoModel", "load_hf", "load_checkpoint", "save_checkpoint",
           "encode_frames", "propagate", "propagate_groups", "propagate_chunked"]
