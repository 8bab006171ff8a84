"""Answering the clients of the projects kubediffusers grew from: livepeer
ai-runner (``livepeer``) and PICO (``pico``).

What differs from the native API is data and small functions here: each API's
defaults, statuses, request models and answers. Their routes are generated
from the registry rows' compatibility routes (``tasks.CompatRoute``) by
``routes.livepeer`` and ``routes.pico``; their error shapes live in
``errors`` (``ErrorStyle``: the native shapes are livepeer's; PICO's are its own),
like every other error.
"""
