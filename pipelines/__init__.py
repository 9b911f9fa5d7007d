"""Input pipelines: datasets, label-noise injection and the streams CLIDMUModel.fit reads."""
