"""The worker runtime: supervisor.py forks worker.py processes that run jobs with runner.py."""
