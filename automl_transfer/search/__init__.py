"""The search: its settings and record, claiming and running trials, recovery, workers."""
