"""Test-only: with MRT_FAKE_VLLM=1, every Python process started with this folder on PYTHONPATH
uses tests/fake_vllm.py's engine for ``rl.backend: vllm`` (the launched ranks included)."""

import os

if os.environ.get("MRT_FAKE_VLLM") == "1":
    from tests.fake_vllm import install

    install()
