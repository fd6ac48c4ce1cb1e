"""Deterministic simulation of sixfold: real storage and writer code over a seeded fake network, disk and clock."""
