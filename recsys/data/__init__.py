"""Input data: the synthetic raw-log generator (`generate`) and the interaction loaders."""
