"""NetCanvas editor (NiceGUI front end)."""
