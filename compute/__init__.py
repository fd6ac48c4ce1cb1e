"""sixfold compute: the writer side of the volume (quorum tracking, recovery)."""
