"""Image-to-image provider blocks (see `base.ImageProvider` for the protocol)."""
