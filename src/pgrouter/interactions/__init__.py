"""Interactions on top of the faces: run(), transactions, dry runs, LISTEN/NOTIFY."""
