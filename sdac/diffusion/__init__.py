"""sdac.diffusion: DDIM host math, the sampler, and the built-in digits model.

The built-in model's files live in sdac/data/ (package data)."""
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DIGITS_ONNX = DATA_DIR / "digits_unet.onnx"
DIGITS_INFO = DATA_DIR / "digits_unet.json"
