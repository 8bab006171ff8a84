"""kubediffusers runner: a FastAPI server around one diffusers pipeline."""

__version__ = "0.1.0"
