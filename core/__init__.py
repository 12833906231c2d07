"""bake & microwave: CLIP-guided pixel optimisation with baked guide paths."""
