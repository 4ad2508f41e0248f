"""Fuzz tests of the payload decoders, topic templates and CSV reader (issue 7, item 5)."""
