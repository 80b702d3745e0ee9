"""The reference Triton's deployment options (``servers/triton.py``), without starting it."""

from __future__ import annotations

import dataclasses

import pytest

from servers import triton


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> dict[str, triton.TritonModelSettings]:
    """The module's table, restored after the test: deploy() changes it in place, as main() means it to."""
    table = dict(triton.SETTINGS)
    monkeypatch.setattr(triton, "SETTINGS", table)
    return table


def test_a_deployment_over_every_available_model_sets_the_computing_ones(settings) -> None:
    """With every model (the echo, generative and ensemble fixtures among them, as the default --models of the
    tests has), --max-batch-size and --max-queue-delay-us set the computing models' and leave the rest."""
    before = dict(settings)
    models = triton.available_models()
    assert set(models) - set(settings), "the list should hold models without settings (echo, pulse...)"
    triton.deploy(models, max_batch_size=8, max_queue_delay_us=300)
    for name, old in before.items():
        expected = dataclasses.replace(old, max_batch_size=8, max_queue_delay_us=300) if name in models else old
        assert settings[name] == expected, name
    assert set(settings) == set(before)


def test_no_option_changes_nothing(settings) -> None:
    before = dict(settings)
    triton.deploy(triton.available_models(), max_batch_size=None, max_queue_delay_us=None)
    assert settings == before
