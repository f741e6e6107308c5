"""Small shared helpers: atomic writes, cache locations, console output."""
