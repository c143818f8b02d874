"""Load management: classes and customers, the priority policy, switchable blocks, demand response,
shedding and restoration (issue 13)."""
