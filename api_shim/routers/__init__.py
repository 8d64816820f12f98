"""One router per documented contract (or per area of a big one)."""
