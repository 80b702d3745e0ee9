"""Real inference servers (Triton via PyTriton, LitServe) used by the tests and the demo."""
