"""The roles a party may have (kept apart so that the CLI can list them without loading the crypto)."""

__all__ = ["ROLES"]

ROLES = ("platform", "bureau", "authority", "lender", "regulator")
