"""The one way to pay, above the hook and below the operators (see docs/ARCHITECTURE in the issue):
the rules every operator shape follows when it pays for an item and writes what it bought."""
