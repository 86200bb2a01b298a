"""Quality gates: scorers with thresholds from the client's profile, and the decision."""
