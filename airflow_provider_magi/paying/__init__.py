"""The one way to pay, above the hook and below the operators: the rules every operator shape
follows when it pays for an item and writes what it bought (one rendering per try, the try's
deadline, output path claims)."""
