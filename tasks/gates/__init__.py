"""Quality gates: scorers with thresholds from the client's profile, and the decision.

One module per gate family — `technical` (resolution, file size, blank,
sharpness, exposure, colour cast), `aesthetic` (LAION predictor through the
profile's `AestheticModel` block), `artifacts` (noise, colour bands, alpha
holes, duplicated regions), `duplicates` (pHash against the ledger), `brand`
(palette distance, structure kept from the source) — each returning
`models.GateScore`s; `decide` ranks the variants (best of N), sends borderline
ones to a person and quarantines the rest; `report` builds the run's artifact.
"""
