"""Explanation figures: runs models on stored images and draws their maps (the `explain` stage)."""
