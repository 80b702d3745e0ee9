"""Locust files used only by the benchmark."""
