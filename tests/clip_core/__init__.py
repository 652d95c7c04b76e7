"""Tests of the library, ``clip_core``."""
