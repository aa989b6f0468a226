"""Transfer: move transactions from one node's tables into another's inbox."""
