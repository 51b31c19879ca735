"""AI cost tracking: OTLP trace intake, usage normalisation, pricing, attribution and margins."""
