"""sixfold storage: storage nodes, the control plane and their LMDB store."""
