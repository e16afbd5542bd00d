"""(placeholder: filled in by the diffusion work)"""

__all__: list[str] = []
