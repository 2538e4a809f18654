"""The core: the graph document, its analysis (validation and shapes), the compiler and the summary.

Nothing here imports the runtime, interchange formats, the edit session, the CLI or the UI.
"""
