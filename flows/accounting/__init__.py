"""What the work costs: workload, the simulated annotator, the review ranker, the report, sweeps."""
