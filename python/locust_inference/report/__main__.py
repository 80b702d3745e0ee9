"""``python -m locust_inference.report``: see :mod:`locust_inference.report.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
