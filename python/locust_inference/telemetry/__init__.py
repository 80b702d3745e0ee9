"""The server's own metrics over a run (Triton's Prometheus endpoint, a local server process), and the load
generator's health (each process's CPU, the open-loop send lag): see docs/metrics.md.

``prometheus`` reads one page within limits, ``windows`` turns two reads into a window and windows into a
step's figures, ``health`` samples and judges the load generator's CPU, ``monitor`` runs it all over a run.
"""
