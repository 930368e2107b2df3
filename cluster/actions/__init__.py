"""What job and alert actions do outside Podium: send an email, fire a web hook, run an action plugin.

Each executor returns an `Outcome` (result.py) and never raises for a failing target; which actions run, and
exactly once, is the runner's business.
"""
