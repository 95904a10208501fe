"""Training, evaluation and export of MADE models (data loaders, loop, presets, CLI); imports only service.made."""
