"""Fuzzing difo's payload decode and settle path (see README.md here)."""
