"""Per-task glue: what model, data and loss each job hands to the one trainer."""
