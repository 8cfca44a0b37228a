"""TOAST operators of toast_crab."""

from .inject_crab import InjectCRAB

__all__ = ["InjectCRAB"]
