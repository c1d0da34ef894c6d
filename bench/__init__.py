"""`make bench`: a real Tandem stack measured against arq and /healthz baselines."""
