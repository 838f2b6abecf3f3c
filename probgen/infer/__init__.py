"""probgen.infer (filled as its issue lands)."""

__all__: list[str] = []
