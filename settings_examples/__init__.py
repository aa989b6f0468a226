"""Settings for each role in the field chain; see base.py for what they share."""
