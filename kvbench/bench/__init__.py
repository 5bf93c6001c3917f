"""Benchmarks behind `kvbench bench`: cache tiers (`tiers`) and the real engine (`engine`).

Every figure is printed next to a reference measured in the same run on the same host, as a ratio;
targets are reported as met or missed, never asserted.
"""
