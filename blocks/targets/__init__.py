"""Publish target blocks (see `base.PublishTarget` for the protocol)."""
