"""How brandforge runs: deployments, the demo, the command line and the webhook gateway."""
