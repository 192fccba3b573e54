"""The `callboard` command: mirrors `lk` where it overlaps, adds what developers miss."""
