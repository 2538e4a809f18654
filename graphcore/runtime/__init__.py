"""The runtime: datasets, training, diffusion, sampling, background jobs and the batching server."""
