"""Editing: the undoable edit session behind the canvas, and grouping nodes into subgraphs."""
