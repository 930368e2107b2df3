"""What job and alert actions do outside Podium: today the web hook sender."""
