"""Examples of what a downstream team builds on the pipeline's assets (group `downstream`)."""
