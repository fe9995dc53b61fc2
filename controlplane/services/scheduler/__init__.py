"""The scheduler's shell around the pure core: build the snapshot, run a pass, commit it under
the database fence, rebalance the mining budget."""
