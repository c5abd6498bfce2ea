"""The one way to pay, above the hook and below the operators (see docs/ARCHITECTURE)."""
