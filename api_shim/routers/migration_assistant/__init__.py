"""Migration Assistant contract: one router per area."""
