"""A small project of its own, outside muso: a residual MLP and a loader for its data, used through muso."""
