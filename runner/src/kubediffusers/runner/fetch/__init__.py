"""``kubediffusers-fetch``: pre-fetch a diffusers checkpoint into the Hugging Face cache.

The runner uses :func:`kubediffusers.runner.fetch.marker.read_marker` to find the
completed snapshot without any network access. Nothing heavy (torch, diffusers)
is imported here: the init container must start fast.
"""

from .marker import Marker, read_marker

__all__ = ["Marker", "read_marker"]
