"""Stage boundaries: functions that build a stage's representation from the previous one's."""
