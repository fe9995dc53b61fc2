"""Redis: the live state that is cheap to lose and fast to read.

Key names (``keys``), wake-ups after commits (``bus``), the leader lease of each fenced
singleton role (``lease``), and each node's live state: report dedup, the lease renewed by
reports, the latest GPU sample (``nodes``). Nothing here is the only copy of anything billed
or fenced (DESIGN invariant 7): SQL is.
"""
