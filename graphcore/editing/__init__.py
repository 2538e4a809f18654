"""Editing: the undoable edit session behind the canvas, the typed edit messages the canvas
sends it (``ops``), and grouping nodes into subgraphs."""
