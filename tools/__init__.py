"""sixfold tools: command-line interface, cluster launcher, benchmarks."""
