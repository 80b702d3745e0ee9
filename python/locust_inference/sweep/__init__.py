"""Load sweeps: steps of concurrency or offered rate, each measured until stable, with each server's
goodput at a latency SLO. ``sweepfile.py`` is the locustfile that runs one; ``make sweep`` runs it
against both reference servers."""
